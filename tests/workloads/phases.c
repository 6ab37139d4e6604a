/*
 * Ground truth for subsecond heatmaps: every second from the start, 300 ms
 * of phase_one() on two threads, then 700 ms of phase_two() on one thread
 * (the other sleeps). Phases follow absolute deadlines, so they do not
 * drift: the busier 300 ms sit at the same offset in every second.
 *
 * usage: phases SECONDS
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static double start, end;
static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Seconds into the current one-second period. */
static double offset(void)
{
	double t = now() - start;
	return t - (long)t;
}

__attribute__((noinline)) static void phase_one(void)
{
	unsigned long x = sink;

	for (int i = 0; i < 20000; i++)
		x = x * 6364136223846793005UL + 1;
	sink = x;
}

__attribute__((noinline)) static void phase_two(void)
{
	unsigned long x = sink;

	for (int i = 0; i < 20000; i++)
		x = x * 2862933555777941757UL + 3;
	sink = x;
}

static void *second_thread(void *unused)
{
	(void)unused;
	while (now() < end) {
		double at = offset();

		if (at < 0.3) {
			phase_one();
		} else {
			double rest = 1.0 - at;
			struct timespec ts = { 0, (long)(rest * 1e9) };

			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t helper;

	if (argc != 2) {
		fprintf(stderr, "usage: phases SECONDS\n");
		return 2;
	}
	start = now();
	end = start + atof(argv[1]);
	prctl(PR_SET_NAME, "phases");
	pthread_create(&helper, NULL, second_thread, NULL);
	while (now() < end) {
		if (offset() < 0.3)
			phase_one();
		else
			phase_two();
	}
	pthread_join(helper, NULL);
	return 0;
}
