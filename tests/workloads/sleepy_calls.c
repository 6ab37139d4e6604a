/*
 * Ground truth for function latency: calls sleepy_function, which sleeps
 * 700 us (so with scheduling jitter each call falls in 512 us - 2 ms),
 * exactly N times, timing each call itself; prints how many calls it
 * measured outside 512 us - 2 ms (a VM descheduled now and then makes a
 * few late, and a tracer must see the same ones).
 *
 * usage: sleepy_calls N
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

__attribute__((noinline)) void sleepy_function(void)
{
	struct timespec ms = { 0, 700000L };

	nanosleep(&ms, NULL);
}

int main(int argc, char **argv)
{
	long calls = argc > 1 ? atol(argv[1]) : 100, outside = 0;
	struct timespec start, end;
	double us;

	prctl(PR_SET_TIMERSLACK, 1UL); /* wake as close to 700 us as the kernel can */

	for (long i = 0; i < calls; i++) {
		clock_gettime(CLOCK_MONOTONIC, &start);
		sleepy_function();
		clock_gettime(CLOCK_MONOTONIC, &end);
		us = (end.tv_sec - start.tv_sec) * 1e6 + (end.tv_nsec - start.tv_nsec) / 1e3;
		if (us < 512 || us >= 2048)
			outside++;
	}
	printf("calls outside 512us-2ms: %ld\n", outside);
	return 0;
}
