/*
 * Ground truth for deep stacks: main -> descend (DEPTH frames, each its
 * own call) -> burn. Samples in burn have DEPTH + 2 user frames or more.
 *
 * usage: deep_stack DEPTH SECONDS
 */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void burn(double seconds)
{
	double end = now() + seconds;
	while (now() < end)
		for (int i = 0; i < 100000; i++)
			sink += i;
}

__attribute__((noinline)) void descend(int depth, double seconds)
{
	if (depth > 1)
		descend(depth - 1, seconds);
	else
		burn(seconds);
	sink++; /* not a tail call */
}

int main(int argc, char **argv)
{
	descend(argc > 1 ? atoi(argv[1]) : 300, argc > 2 ? atof(argv[2]) : 5.0);
	return 0;
}
