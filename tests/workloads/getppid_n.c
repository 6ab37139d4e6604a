/*
 * Ground truth for syscall counting: waits, makes exactly N getppid calls,
 * waits again (so a tracer attached by PID sees all of them), and exits.
 *
 * usage: getppid_n N [DELAY_MS]
 */
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long calls = argc > 1 ? atol(argv[1]) : 1000;
	long delay_ms = argc > 2 ? atol(argv[2]) : 500;
	struct timespec delay = { delay_ms / 1000, (delay_ms % 1000) * 1000000L };

	nanosleep(&delay, NULL);
	for (long i = 0; i < calls; i++)
		syscall(SYS_getppid);
	nanosleep(&delay, NULL);
	return 0;
}
