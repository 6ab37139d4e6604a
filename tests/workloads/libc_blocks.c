/*
 * Ground truth for off-CPU unwinding through Debian's libc (built without
 * frame pointers). The main thread ("blocker") blocks in three functions
 * that call libc: sleep_in_libc (nanosleep, 10 ms), read_in_libc (read() on
 * an empty pipe a helper thread fills after 6 ms) and wait_in_libc
 * (pthread_cond_wait, signalled by the helper after 4 ms). It measures each
 * function's share of its time itself and prints "function milliseconds"
 * lines at exit. A frame-pointer unwinder loses these callers: libc's
 * wrappers do not keep RBP as a frame pointer.
 *
 * usage: libc_blocks SECONDS
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static int request_pipe[2], data_pipe[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t signalled = PTHREAD_COND_INITIALIZER;
static int ready;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pause_ms(long ms)
{
	struct timespec ts = { 0, ms * 1000000L };
	nanosleep(&ts, NULL);
}

/* Answers each request after a delay: 'p' fills the data pipe, 'c' signals the condition. */
static void *helper(void *unused)
{
	char request;

	prctl(PR_SET_NAME, "helper");
	while (read(request_pipe[0], &request, 1) == 1) {
		if (request == 'p') {
			pause_ms(6);
			write(data_pipe[1], "x", 1);
		} else {
			pause_ms(4);
			pthread_mutex_lock(&lock);
			ready = 1;
			pthread_cond_signal(&signalled);
			pthread_mutex_unlock(&lock);
		}
	}
	return unused;
}

__attribute__((noinline)) void sleep_in_libc(void)
{
	pause_ms(10);
}

__attribute__((noinline)) void read_in_libc(void)
{
	char byte;

	write(request_pipe[1], "p", 1);
	while (read(data_pipe[0], &byte, 1) != 1)
		;
}

__attribute__((noinline)) void wait_in_libc(void)
{
	pthread_mutex_lock(&lock);
	ready = 0;
	write(request_pipe[1], "c", 1);
	while (!ready)
		pthread_cond_wait(&signalled, &lock);
	pthread_mutex_unlock(&lock);
}

#define MEASURE(total, call)              \
	do {                              \
		double started = now();   \
		call;                     \
		total += now() - started; \
	} while (0)

int main(int argc, char **argv)
{
	double end = now() + (argc > 1 ? atof(argv[1]) : 3.0);
	double t_sleep = 0, t_read = 0, t_wait = 0;
	pthread_t thread;

	prctl(PR_SET_NAME, "blocker");
	if (pipe(request_pipe) || pipe(data_pipe) || pthread_create(&thread, NULL, helper, NULL))
		return 1;
	while (now() < end) {
		MEASURE(t_sleep, sleep_in_libc());
		MEASURE(t_read, read_in_libc());
		MEASURE(t_wait, wait_in_libc());
	}
	printf("sleep_in_libc %.3f\nread_in_libc %.3f\nwait_in_libc %.3f\n", t_sleep * 1e3, t_read * 1e3,
	       t_wait * 1e3);
	fflush(stdout);
	return 0;
}
