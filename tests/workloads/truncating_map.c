/*
 * A hostile user's process: maps FILE (which it owns) executable, then,
 * while its main thread burns CPU (so profilers see the process and read
 * its mappings), a second thread truncates FILE to nothing and writes it
 * back, over and over. A reader that memory-maps the file dies of SIGBUS
 * when it touches a page past the current end.
 *
 * usage: truncating_map FILE SECONDS
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static char *contents;
static size_t size;
static volatile int done;
static volatile unsigned long sink;

static void *truncate_loop(void *unused)
{
	while (!done) {
		int fd = open(path, O_WRONLY | O_TRUNC);
		if (fd < 0)
			break;
		usleep(2000);
		for (size_t at = 0; at < size;) {
			ssize_t n = write(fd, contents + at, size - at);
			if (n <= 0)
				break;
			at += n;
		}
		close(fd);
	}
	return unused;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void hostile_spin(double seconds)
{
	double end = now() + seconds;
	while (now() < end)
		for (int i = 0; i < 100000; i++)
			sink += i;
}

int main(int argc, char **argv)
{
	struct stat st;
	pthread_t thread;
	int fd;

	if (argc < 3)
		return 2;
	path = argv[1];
	fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st))
		return 1;
	size = st.st_size;
	contents = malloc(size);
	if (!contents || read(fd, contents, size) != (ssize_t)size)
		return 1;
	if (mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED)
		return 1;
	pthread_create(&thread, NULL, truncate_loop, NULL);
	hostile_spin(atof(argv[2]));
	done = 1;
	pthread_join(thread, NULL);
	return 0;
}
