/*
 * Ground truth for CPU profiles: main -> run_workload alternates between
 * burn_three (3 units of work) and burn_one (1 unit), so on-CPU time splits
 * 3:1 between them. Built with frame pointers and without sibling calls so
 * every frame is visible to a frame-pointer unwinder.
 *
 * usage: cpu_split SECONDS
 */
#include <stdlib.h>
#include <time.h>

#define UNIT 200000UL

static volatile unsigned long sink;

__attribute__((noinline)) void burn_three(void)
{
	for (unsigned long i = 0; i < 3 * UNIT; i++)
		sink += i;
}

__attribute__((noinline)) void burn_one(void)
{
	for (unsigned long i = 0; i < UNIT; i++)
		sink += i;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void run_workload(double seconds)
{
	double end = now() + seconds;
	while (now() < end) {
		burn_three();
		burn_one();
	}
}

int main(int argc, char **argv)
{
	run_workload(argc > 1 ? atof(argv[1]) : 5.0);
	return 0;
}
