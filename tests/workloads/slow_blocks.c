/*
 * Ground truth for stacks cached across blocks (offcpu's stack cache): one
 * thread ("slowblock") blocks 5 times a second, 200 ms each time, in the
 * same deep stack, as PostgreSQL's background writer does:
 * main;level_one;level_two;level_three;block_slowly, then nanosleep in
 * Debian's libc. Built without frame pointers, its callers can only come
 * from unwind tables; a stack walked before they arrive is cut.
 *
 * usage: slow_blocks SECONDS
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void block_slowly(double end)
{
	struct timespec ts = { 0, 200 * 1000000L };

	while (now() < end)
		nanosleep(&ts, NULL);
}

__attribute__((noinline)) void level_three(double end)
{
	block_slowly(end);
}

__attribute__((noinline)) void level_two(double end)
{
	level_three(end);
}

__attribute__((noinline)) void level_one(double end)
{
	level_two(end);
}

int main(int argc, char **argv)
{
	prctl(PR_SET_NAME, "slowblock");
	level_one(now() + (argc > 1 ? atof(argv[1]) : 10));
	return 0;
}
