/*
 * A hostile process's perf maps: it forks, writes MEGABYTES of distinct
 * perf-map lines (long names) as /tmp/perf-PID.map of the parent, links
 * the child's map to the same file, and both burn CPU for SECONDS.
 *
 *   perf_map_bomb MEGABYTES SECONDS
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void burn(double seconds)
{
	struct timespec start, now;
	volatile unsigned long sum = 0;

	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int i = 0; i < 1000000; i++)
			sum += i;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
}

int main(int argc, char **argv)
{
	long megabytes = argc > 1 ? atol(argv[1]) : 100;
	double seconds = argc > 2 ? atof(argv[2]) : 5;
	char path[64], link_path[64], name[201];
	int ready[2];

	if (pipe(ready))
		return 1;
	pid_t child = fork();
	if (child == 0) {
		char byte;
		close(ready[1]);
		if (read(ready[0], &byte, 1) != 1)
			return 1;
		burn(seconds);
		return 0;
	}
	snprintf(path, sizeof(path), "/tmp/perf-%d.map", getpid());
	snprintf(link_path, sizeof(link_path), "/tmp/perf-%d.map", child);
	FILE *map = fopen(path, "w");
	if (!map)
		return 1;
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	long long written = 0;
	for (unsigned long long address = 0x100000000ULL; written < megabytes << 20; address += 16)
		written += fprintf(map, "%llx 10 %s_%llx\n", address, name, address);
	fclose(map);
	unlink(link_path);
	if (link(path, link_path))
		return 1;
	if (write(ready[1], "x", 1) != 1)
		return 1;
	printf("ready\n");
	fflush(stdout);
	burn(seconds);
	waitpid(child, NULL, 0);
	unlink(path);
	unlink(link_path);
	return 0;
}
