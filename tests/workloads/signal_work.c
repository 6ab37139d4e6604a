/*
 * Ground truth for unwinding through signal frames (built without frame
 * pointers, blocking through Debian's libc, which has none either).
 *
 * - The main thread ("sigwork") waits in wait_for_signals (pause()). A
 *   SIGALRM every 20 ms runs on_alarm, which burns about 4 ms of CPU in
 *   burn_in_handler and blocks 4 ms in block_in_handler (nanosleep). Every
 *   sample or block there must reach main through the signal frame:
 *   main;wait_for_signals;...pause...;[signal];on_alarm;burn_in_handler.
 * - As PostgreSQL's postmaster starts its workers, a child ("sigchild") is
 *   forked from a SIGUSR1 handler: main;start_child_by_signal;...kill...;
 *   [signal];on_usr1;child_work, which burns and blocks in turn for the
 *   whole run. Its stacks hold the parent's signal frame.
 *
 * usage: signal_work SECONDS
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds;
static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void spin_until(double end)
{
	while (now() < end)
		for (int i = 0; i < 1000; i++)
			sink += i;
}

__attribute__((noinline)) void burn_in_handler(void)
{
	spin_until(now() + 0.004);
}

__attribute__((noinline)) void block_in_handler(void)
{
	struct timespec ts = { 0, 4 * 1000000L };
	nanosleep(&ts, NULL);
}

__attribute__((noinline)) void on_alarm(int signal)
{
	burn_in_handler();
	block_in_handler();
}

__attribute__((noinline)) void child_burn(void)
{
	spin_until(now() + 0.005);
}

__attribute__((noinline)) void child_block(void)
{
	struct timespec ts = { 0, 5 * 1000000L };
	nanosleep(&ts, NULL);
}

__attribute__((noinline)) void child_work(void)
{
	double end = now() + seconds;

	prctl(PR_SET_NAME, "sigchild");
	while (now() < end) {
		child_burn();
		child_block();
	}
	_exit(0);
}

__attribute__((noinline)) void on_usr1(int signal)
{
	if (fork() == 0)
		child_work();
}

__attribute__((noinline)) void start_child_by_signal(void)
{
	kill(getpid(), SIGUSR1);
}

__attribute__((noinline)) void wait_for_signals(double end)
{
	while (now() < end)
		pause();
}

int main(int argc, char **argv)
{
	struct sigaction alarm_action = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	struct sigaction usr1_action = { .sa_handler = on_usr1, .sa_flags = SA_RESTART };
	struct itimerval every_20ms = { { 0, 20000 }, { 0, 20000 } };
	double end;

	seconds = argc > 1 ? atof(argv[1]) : 5;
	end = now() + seconds;
	prctl(PR_SET_NAME, "sigwork");
	sigaction(SIGALRM, &alarm_action, NULL);
	sigaction(SIGUSR1, &usr1_action, NULL);
	start_child_by_signal();
	setitimer(ITIMER_REAL, &every_20ms, NULL);
	wait_for_signals(end);
	wait(NULL);
	return 0;
}
