/*
 * Ground truth for CPU profiles: main -> run_workload alternates between
 * burn_three (3 units of work per round) and burn_one (1 unit), both
 * through the same loop, spin(), so on-CPU time splits 3:1 between them.
 * Rounds vary in length (a fixed pseudo-random sequence), so the split
 * holds at any sampling rate. Built with frame pointers and without
 * sibling calls so every frame is visible to a frame-pointer unwinder.
 *
 * usage: cpu_split SECONDS
 */
#include <stdlib.h>
#include <time.h>

#define UNIT 10000UL

static volatile unsigned long sink;

/* The one loop both functions run, so a unit costs the same in each. */
__attribute__((noinline)) void spin(unsigned long units)
{
	for (unsigned long i = 0; i < units * UNIT; i++)
		sink += i;
}

__attribute__((noinline)) void burn_three(unsigned long units)
{
	spin(3 * units);
}

/* Build with -DONE_WEIGHT=2 for a burn_one twice as slow (diff tests). */
#ifndef ONE_WEIGHT
#define ONE_WEIGHT 1
#endif

__attribute__((noinline)) void burn_one(unsigned long units)
{
	spin(ONE_WEIGHT * units);
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
	unsigned int seed = 1;
	while (now() < end) {
		/* Rounds of varying length, so no sampling rate can run in
		 * lockstep with them. */
		unsigned long units = 1 + (unsigned long)(rand_r(&seed) % 8);
		burn_three(units);
		burn_one(units);
	}
}

int main(int argc, char **argv)
{
	run_workload(argc > 1 ? atof(argv[1]) : 5.0);
	return 0;
}
