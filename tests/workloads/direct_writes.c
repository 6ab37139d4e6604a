/*
 * Ground truth for block I/O: exactly N 4 KiB O_DIRECT writes to distinct
 * offsets of a file in DIR, then an fsync; the file is removed at exit.
 *
 * usage: direct_writes N DIR
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long writes = argc > 1 ? atol(argv[1]) : 100;
	char path[4096];
	void *block;
	int fd;

	if (argc < 3)
		return 2;
	snprintf(path, sizeof(path), "%s/direct_writes.%d", argv[2], getpid());
	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT, 0600);
	if (fd < 0 || posix_memalign(&block, 4096, 4096)) {
		perror("direct_writes");
		return 1;
	}
	memset(block, 'x', 4096);
	for (long i = 0; i < writes; i++)
		if (pwrite(fd, block, 4096, i * 4096) != 4096) {
			perror("pwrite");
			return 1;
		}
	if (fsync(fd)) {
		perror("fsync");
		return 1;
	}
	close(fd);
	unlink(path);
	return 0;
}
