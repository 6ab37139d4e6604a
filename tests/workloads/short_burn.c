/*
 * Ground truth for short-lived processes: burns CPU in short_burn_spin for
 * MILLISECONDS of CPU time, then exits.
 *
 * usage: short_burn MILLISECONDS
 */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void short_burn_spin(double seconds)
{
	double end = cpu_now() + seconds;
	while (cpu_now() < end)
		for (int i = 0; i < 1000000; i++)
			sink += i;
}

int main(int argc, char **argv)
{
	short_burn_spin((argc > 1 ? atof(argv[1]) : 50) / 1000.0);
	return 0;
}
