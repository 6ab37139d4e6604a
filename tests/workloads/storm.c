/*
 * Ground truth for thread and process churn: THREADS short threads (50 at a
 * time, each burning about 1 ms in storm_thread_work), then EXECS processes
 * that each fork and exec this program as "storm noop", which burns about
 * 1 ms in storm_exec_work and exits. Prints what it completed.
 *
 * usage: storm THREADS EXECS
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static void burn_ms(double ms)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int i = 0; i < 10000; i++)
			sink += i;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) * 1e3 + (now.tv_nsec - start.tv_nsec) / 1e6 < ms);
}

__attribute__((noinline)) void *storm_thread_work(void *unused)
{
	(void)unused;
	burn_ms(1);
	return NULL;
}

__attribute__((noinline)) void storm_exec_work(void)
{
	burn_ms(1);
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "noop") == 0) {
		storm_exec_work();
		return 0;
	}
	if (argc != 3)
		return 2;
	int threads = atoi(argv[1]), execs = atoi(argv[2]), done_threads = 0, done_execs = 0;
	pthread_t batch[50];
	while (done_threads < threads) {
		int n = threads - done_threads < 50 ? threads - done_threads : 50;
		for (int i = 0; i < n; i++)
			if (pthread_create(&batch[i], NULL, storm_thread_work, NULL) != 0)
				return 1;
		for (int i = 0; i < n; i++)
			pthread_join(batch[i], NULL);
		done_threads += n;
	}
	for (int i = 0; i < execs; i++) {
		pid_t child = fork();
		if (child == 0) {
			execl("/proc/self/exe", argv[0], "noop", (char *)NULL);
			_exit(127);
		}
		int status;
		if (child < 0 || waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			return 1;
		done_execs++;
	}
	printf("%d threads, %d execs\n", done_threads, done_execs);
	return 0;
}
