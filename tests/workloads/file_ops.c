/*
 * Ground truth for file system latency: waits, creates DIR/file_ops.data
 * with one 64 KiB write, then makes exactly N 4 KiB preads and M fsyncs,
 * waits again (so a tracer attached by PID sees all of them), and exits.
 *
 * usage: file_ops DIR N M
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buffer[65536];

int main(int argc, char **argv)
{
	struct timespec pause = { 0, 500000000L };
	char path[4096];
	long reads, syncs;
	int fd;

	if (argc < 4)
		return 2;
	reads = atol(argv[2]);
	syncs = atol(argv[3]);
	snprintf(path, sizeof(path), "%s/file_ops.data", argv[1]);
	nanosleep(&pause, NULL);
	fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
	if (fd < 0 || write(fd, buffer, sizeof(buffer)) != sizeof(buffer)) {
		perror("file_ops");
		return 1;
	}
	for (long i = 0; i < reads; i++)
		if (pread(fd, buffer, 4096, (i % 16) * 4096) != 4096)
			return 1;
	for (long i = 0; i < syncs; i++)
		if (fsync(fd))
			return 1;
	close(fd);
	unlink(path);
	nanosleep(&pause, NULL);
	return 0;
}
