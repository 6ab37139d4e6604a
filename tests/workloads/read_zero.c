/*
 * Ground truth for kernel stacks: spends its time in the read() syscall,
 * copying from /dev/zero, so nearly every sample is in the kernel.
 *
 * usage: read_zero SECONDS
 */
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char buffer[1 << 20];

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5.0;
	int fd = open("/dev/zero", O_RDONLY);
	time_t end = time(NULL) + (time_t)seconds;

	if (fd < 0)
		return 1;
	while (time(NULL) < end)
		if (read(fd, buffer, sizeof(buffer)) < 0)
			return 1;
	return 0;
}
