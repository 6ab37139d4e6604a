/*
 * Ground truth for function latency: calls sleepy_function, which sleeps
 * 700 us (so with scheduling jitter each call still falls in 512 us - 2 ms),
 * exactly N times.
 *
 * usage: sleepy_calls N
 */
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
	long calls = argc > 1 ? atol(argv[1]) : 100;

	prctl(PR_SET_TIMERSLACK, 1UL); /* wake as close to 700 us as the kernel can */

	for (long i = 0; i < calls; i++)
		sleepy_function();
	return 0;
}
