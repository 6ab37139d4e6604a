/*
 * Names chosen to break a page that embeds them: the thread is named
 * "<!--<script>" (comm) and it burns CPU for SECONDS (its argument) in a
 * function whose symbol is "</script><!--<script>&amp;".
 */
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

__attribute__((noinline)) void hostile(volatile unsigned long *sum) __asm__("</script><!--<script>&amp;");

__attribute__((noinline)) void hostile(volatile unsigned long *sum)
{
	for (int i = 0; i < 1000000; i++)
		*sum += i;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5;
	struct timespec start, now;
	volatile unsigned long sum = 0;

	prctl(PR_SET_NAME, "<!--<script>", 0, 0, 0);
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		hostile(&sum);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
	return 0;
}
