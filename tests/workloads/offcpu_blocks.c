/*
 * Ground truth for off-CPU profiles. The main thread (named "blocker", or
 * $BLOCKER_NAME)
 * blocks in functions whose share of its time it measures itself, and
 * prints "function milliseconds" lines at exit. Blocking syscalls are issued
 * with an inline `syscall` instruction from those functions, so the user
 * stack is visible to a frame-pointer unwinder without libc's frames.
 *
 * usage: offcpu_blocks split SECONDS  sleep 10 ms, read an empty pipe that a helper
 *                                     fills after 6 ms, wait on a futex woken after 4 ms
 *        offcpu_blocks mix SECONDS    alternate 1 ms and 50 ms sleeps
 *        offcpu_blocks io SECONDS DIR O_DIRECT|O_DSYNC 4 KiB writes in DIR, then a 5 ms sleep
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline __attribute__((always_inline)) long raw_syscall4(long n, long a, long b, long c, long d)
{
	long ret;
	register long r10 asm("r10") = d;

	asm volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
	return ret;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pause_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static int request_pipe[2], data_pipe[2];
static int futex_word;

/* The helper answers each request after a delay: 'p' fills the data pipe, 'f' wakes the futex. */
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
			__atomic_store_n(&futex_word, 1, __ATOMIC_SEQ_CST);
			syscall(SYS_futex, &futex_word, FUTEX_WAKE, 1, NULL, NULL, 0);
		}
	}
	return unused;
}

__attribute__((noinline)) void sleep_part(long ms)
{
	struct timespec ts = { 0, ms * 1000000L };

	raw_syscall4(SYS_nanosleep, (long)&ts, 0, 0, 0);
}

__attribute__((noinline)) void pipe_part(void)
{
	char byte;

	write(request_pipe[1], "p", 1);
	while (raw_syscall4(SYS_read, data_pipe[0], (long)&byte, 1, 0) != 1)
		;
}

__attribute__((noinline)) void futex_part(void)
{
	__atomic_store_n(&futex_word, 0, __ATOMIC_SEQ_CST);
	write(request_pipe[1], "f", 1);
	while (__atomic_load_n(&futex_word, __ATOMIC_SEQ_CST) == 0)
		raw_syscall4(SYS_futex, (long)&futex_word, FUTEX_WAIT, 0, 0);
}

__attribute__((noinline)) void short_sleep(void)
{
	sleep_part(1);
}

__attribute__((noinline)) void long_sleep(void)
{
	sleep_part(50);
}

__attribute__((noinline)) void disk_write(int fd, void *block)
{
	raw_syscall4(SYS_pwrite64, fd, (long)block, 4096, 0);
}

#define MEASURE(total, call)              \
	do {                              \
		double started = now();   \
		call;                     \
		total += now() - started; \
	} while (0)

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "split";
	double end = now() + (argc > 2 ? atof(argv[2]) : 3.0);
	double t_sleep = 0, t_pipe = 0, t_futex = 0, t_short = 0, t_long = 0, t_disk = 0;
	pthread_t thread;

	prctl(PR_SET_NAME, getenv("BLOCKER_NAME") ? getenv("BLOCKER_NAME") : "blocker");
	if (strcmp(mode, "split") == 0) {
		if (pipe(request_pipe) || pipe(data_pipe) || pthread_create(&thread, NULL, helper, NULL))
			return 1;
		while (now() < end) {
			MEASURE(t_sleep, sleep_part(10));
			MEASURE(t_pipe, pipe_part());
			MEASURE(t_futex, futex_part());
		}
		printf("sleep_part %.3f\npipe_part %.3f\nfutex_part %.3f\n", t_sleep * 1e3, t_pipe * 1e3,
		       t_futex * 1e3);
	} else if (strcmp(mode, "mix") == 0) {
		while (now() < end) {
			MEASURE(t_short, short_sleep());
			MEASURE(t_long, long_sleep());
		}
		printf("short_sleep %.3f\nlong_sleep %.3f\n", t_short * 1e3, t_long * 1e3);
	} else if (strcmp(mode, "io") == 0 && argc > 3) {
		char path[4096];
		void *block;
		int fd;

		snprintf(path, sizeof(path), "%s/offcpu_blocks.io", argv[3]);
		fd = open(path, O_CREAT | O_WRONLY | O_DIRECT | O_DSYNC, 0600);
		if (fd < 0 || posix_memalign(&block, 4096, 4096))
			return 1;
		memset(block, 'x', 4096);
		while (now() < end) {
			MEASURE(t_disk, disk_write(fd, block));
			MEASURE(t_sleep, sleep_part(5));
		}
		close(fd);
		unlink(path);
		printf("disk_write %.3f\nsleep_part %.3f\n", t_disk * 1e3, t_sleep * 1e3);
	} else {
		return 2;
	}
	fflush(stdout);
	return 0;
}
