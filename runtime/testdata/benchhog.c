/* benchhog: the workload of the runtime benchmarks (runtime/bench_linux_test.go).
 *
 *   benchhog mem MIB          touch MIB MiB of anonymous memory, write "ready"
 *                             to /tmp/ready, then sleep forever;
 *   benchhog stall MIB        the same, then measure how long the process is
 *                             stopped: the main thread reads CLOCK_MONOTONIC
 *                             every ~100 us and appends every gap longer than
 *                             1 ms to /tmp/gaps as "<end_ns> <gap_ns>\n";
 *   benchhog tree N MIB       a tree of N processes (root, 7 children, the
 *                             rest grandchildren) each touching MIB MiB.
 *
 * Every page gets distinct non-zero bytes, so no page is the zero page. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void touch(size_t mib) {
	size_t n = mib << 20;
	uint64_t *p = malloc(n);
	if (!p)
		exit(2);
	for (size_t i = 0; i < n / 8; i++)
		p[i] = i * 0x9e3779b97f4a7c15ull + 1;
	/* The compiler must not drop the stores: the memory is never read here. */
	__asm__ volatile("" : : "r"(p) : "memory");
}

static void ready(void) {
	int fd = open("/tmp/ready.new", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, "ready", 5) != 5)
		exit(3);
	close(fd);
	rename("/tmp/ready.new", "/tmp/ready");
}

static int64_t now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void stall_loop(void) {
	int fd = open("/tmp/gaps", O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
	if (fd < 0)
		exit(4);
	ready();
	struct timespec nap = {0, 100000};
	int64_t prev = now();
	for (;;) {
		nanosleep(&nap, NULL);
		int64_t t = now();
		if (t - prev > 1000000) {
			char line[64];
			int k = snprintf(line, sizeof line, "%lld %lld\n", (long long)t, (long long)(t - prev));
			if (write(fd, line, k) != k)
				exit(5);
		}
		prev = t;
	}
}

/* spawn forks a child that touches mib MiB, forks kids grandchildren (that
 * do the same), reports to the pipe and sleeps. */
static void spawn(int wfd, size_t mib, int kids) {
	pid_t pid = fork();
	if (pid < 0)
		exit(6);
	if (pid > 0)
		return;
	for (int i = 0; i < kids; i++)
		spawn(wfd, mib, 0);
	touch(mib);
	if (write(wfd, "x", 1) != 1)
		exit(7);
	close(wfd);
	for (;;)
		pause();
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 1;
	if (!strcmp(argv[1], "tree") && argc == 4) {
		int n = atoi(argv[2]);
		size_t mib = (size_t)atoi(argv[3]);
		int p[2];
		if (pipe(p))
			return 8;
		int rest = n - 1, spawned = 0;
		for (int i = 0; i < 7 && rest > 0; i++) {
			int kids = (rest - 1) / (7 - i);
			spawn(p[1], mib, kids);
			spawned += 1 + kids;
			rest -= 1 + kids;
		}
		close(p[1]);
		touch(mib);
		char c;
		for (int i = 0; i < spawned; i++)
			if (read(p[0], &c, 1) != 1)
				return 9;
		close(p[0]);
		ready();
		for (;;)
			pause();
	}
	touch((size_t)atoi(argv[2]));
	if (!strcmp(argv[1], "stall"))
		stall_loop();
	ready();
	for (;;)
		pause();
}
