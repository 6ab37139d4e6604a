/*
 * Ground truth for unwinding through the vDSO: read_clock spends its time
 * in clock_gettime(CLOCK_MONOTONIC), which libc (no frame pointers) hands
 * to the vDSO, so nearly every sample's leaf is in libc or the vDSO and
 * only unwind tables lead back to read_clock and main.
 *
 * usage: vdso_clock SECONDS
 */
#include <stdlib.h>
#include <time.h>

static volatile long sink;

__attribute__((noinline)) void read_clock(double seconds)
{
	struct timespec ts;
	double end;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = ts.tv_sec + ts.tv_nsec / 1e9 + seconds;
	do {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		sink += ts.tv_nsec;
	} while (ts.tv_sec + ts.tv_nsec / 1e9 < end);
}

int main(int argc, char **argv)
{
	read_clock(argc > 1 ? atof(argv[1]) : 3.0);
	return 0;
}
