/*
 * Ground truth for function latency: calls sleepy_function, which sleeps
 * about 1 ms, exactly N times.
 *
 * usage: sleepy_calls N
 */
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) void sleepy_function(void)
{
	struct timespec ms = { 0, 1000000L };

	nanosleep(&ms, NULL);
}

int main(int argc, char **argv)
{
	long calls = argc > 1 ? atol(argv[1]) : 100;

	for (long i = 0; i < calls; i++)
		sleepy_function();
	return 0;
}
