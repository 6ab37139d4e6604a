/*
 * Ground truth for off-wake and wakeup profiles.
 *
 * usage: wake_chain pipe SECONDS   thread "pw-reader" blocks reading a pipe in
 *                                  wait_for_data(); thread "pw-writer" burns
 *                                  about 4 ms of CPU in compute_answer() and
 *                                  writes one byte from produce_and_send().
 *                                  Prints "blocked_ms X": the reader's time
 *                                  inside read(), as it measured it.
 *        wake_chain sleep SECONDS  thread "napper" sleeps 2 ms at a time with
 *                                  nanosleep() in nap(): a timer wakes it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static int pipe_fds[2];
static double deadline;
static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static void compute_answer(void)
{
	double until = now() + 0.004;
	unsigned long x = 1;

	while (now() < until)
		for (int i = 0; i < 1000; i++)
			x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
}

__attribute__((noinline)) static int produce_and_send(void)
{
	char byte = 1;

	compute_answer();
	return write(pipe_fds[1], &byte, 1) == 1;
}

static void *writer(void *unused)
{
	(void)unused;
	prctl(PR_SET_NAME, "pw-writer");
	while (now() < deadline)
		if (!produce_and_send())
			break;
	close(pipe_fds[1]);
	return NULL;
}

/* Returns the seconds spent in read(), or -1 at end of file. */
__attribute__((noinline)) static double wait_for_data(void)
{
	char byte;
	double start = now();
	ssize_t got = read(pipe_fds[0], &byte, 1);

	return got == 1 ? now() - start : -1;
}

static void *reader(void *result)
{
	double blocked = 0, spent;

	prctl(PR_SET_NAME, "pw-reader");
	while ((spent = wait_for_data()) >= 0)
		blocked += spent;
	*(double *)result = blocked;
	return NULL;
}

__attribute__((noinline)) static void nap(void)
{
	struct timespec ts = { 0, 2000000 };

	nanosleep(&ts, NULL);
}

static void *napper(void *unused)
{
	(void)unused;
	prctl(PR_SET_NAME, "napper");
	while (now() < deadline)
		nap();
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t read_thread, write_thread, nap_thread;
	double blocked = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: wake_chain pipe|sleep SECONDS\n");
		return 2;
	}
	deadline = now() + atof(argv[2]);
	if (!strcmp(argv[1], "pipe")) {
		if (pipe(pipe_fds))
			return 1;
		pthread_create(&read_thread, NULL, reader, &blocked);
		pthread_create(&write_thread, NULL, writer, NULL);
		pthread_join(write_thread, NULL);
		pthread_join(read_thread, NULL);
		printf("blocked_ms %.1f\n", blocked * 1e3);
		return 0;
	}
	if (!strcmp(argv[1], "sleep")) {
		pthread_create(&nap_thread, NULL, napper, NULL);
		pthread_join(nap_thread, NULL);
		return 0;
	}
	fprintf(stderr, "unknown mode %s\n", argv[1]);
	return 2;
}
