/*
 * Ground truth for off-wake and wakeup profiles.
 *
 * usage: wake_chain futex SECONDS  thread "consumer" waits on a futex in
 *                                  wait_for_data(); thread "producer" burns
 *                                  about 4 ms of CPU in compute_answer(),
 *                                  then bumps the futex word and wakes it
 *                                  from produce_and_send(). Prints
 *                                  "blocked_ms X": the consumer's time inside
 *                                  futex(FUTEX_WAIT), as it measured it.
 *        wake_chain sleep SECONDS  thread "napper" sleeps 2 ms at a time with
 *                                  nanosleep() in nap(): a timer wakes it.
 *
 * Why a futex and not a pipe: FUTEX_WAKE wakes its waiter after releasing
 * the futex's lock, while a pipe's writer holds the wait-queue lock during
 * the wakeup. A woken pipe reader can then spin (with interrupts off, or
 * halted on a virtual machine) for that lock inside read(): on CPU as the
 * scheduler sees it, but inside read() by the reader's clock.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Bumped by each production; the consumer waits while it is unchanged. */
static unsigned int produced;
static unsigned int producer_done;
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

static void publish(void)
{
	__atomic_add_fetch(&produced, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &produced, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

__attribute__((noinline)) static void produce_and_send(void)
{
	compute_answer();
	publish();
}

static void *producer_main(void *unused)
{
	(void)unused;
	prctl(PR_SET_NAME, "producer");
	while (now() < deadline)
		produce_and_send();
	__atomic_store_n(&producer_done, 1, __ATOMIC_SEQ_CST);
	publish();
	return NULL;
}

/* Waits until `produced` moves past `*seen`; returns the seconds spent in FUTEX_WAIT. */
__attribute__((noinline)) static double wait_for_data(unsigned int *seen)
{
	double spent = 0;

	while (__atomic_load_n(&produced, __ATOMIC_SEQ_CST) == *seen) {
		double start = now();

		syscall(SYS_futex, &produced, FUTEX_WAIT_PRIVATE, *seen, NULL, NULL, 0);
		spent += now() - start;
	}
	*seen = __atomic_load_n(&produced, __ATOMIC_SEQ_CST);
	return spent;
}

static void *consumer_main(void *result)
{
	double blocked = 0;
	unsigned int seen = 0;

	prctl(PR_SET_NAME, "consumer");
	while (!__atomic_load_n(&producer_done, __ATOMIC_SEQ_CST))
		blocked += wait_for_data(&seen);
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
	pthread_t consumer_thread, producer_thread, nap_thread;
	double blocked = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: wake_chain futex|sleep SECONDS\n");
		return 2;
	}
	deadline = now() + atof(argv[2]);
	if (!strcmp(argv[1], "futex")) {
		pthread_create(&consumer_thread, NULL, consumer_main, &blocked);
		pthread_create(&producer_thread, NULL, producer_main, NULL);
		pthread_join(producer_thread, NULL);
		pthread_join(consumer_thread, NULL);
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
