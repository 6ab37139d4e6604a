/*
 * Benchmark workload: a CPU-bound loop that runs for SECONDS and prints how
 * many rounds of fixed work it finished (higher is faster).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static void round_of_work(void)
{
	for (unsigned long i = 0; i < 100000; i++)
		sink += i;
}

int main(int argc, char **argv)
{
	double end = now() + (argc > 1 ? atof(argv[1]) : 5.0);
	unsigned long rounds = 0;

	while (now() < end) {
		round_of_work();
		rounds++;
	}
	printf("%lu\n", rounds);
	return 0;
}
