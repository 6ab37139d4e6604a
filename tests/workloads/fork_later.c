/*
 * A process that forks a busy child after a profiler has started: the
 * parent waits WAIT seconds, forks a child that burns CPU in child_burn for
 * BURN seconds, and waits for it.
 *
 *   fork_later WAIT BURN
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) void child_burn(double seconds)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int i = 0; i < 1000000; i++)
			sink += i;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
}

int main(int argc, char **argv)
{
	double wait = argc > 1 ? atof(argv[1]) : 1;
	double burn = argc > 2 ? atof(argv[2]) : 2;

	usleep((useconds_t)(wait * 1e6));
	pid_t child = fork();
	if (child == 0) {
		child_burn(burn);
		_exit(0);
	}
	waitpid(child, NULL, 0);
	return 0;
}
