/* benchthreads: the 64-thread workload of the runtime benchmarks
 * (runtime/bench5_linux_test.go).
 *
 *   benchthreads MIB
 *
 * The main thread and 63 workers; each worker touches MIB MiB of its own
 * memory with a pattern derived from its index, then loops, a quarter of
 * them each way: nanosleep (2 ms), futex wait on a shared generation word,
 * read on its own pipe, epoll_wait on its own eventfd. Once every worker has
 * touched its memory the main thread writes "ready" to /tmp/ready and, like
 * benchhog's stall mode, reads CLOCK_MONOTONIC every ~100 us and appends
 * every gap over 1 ms to /tmp/gaps as "<end_ns> <gap_ns>\n".
 *
 * When /tmp/check appears (looked for every ~1000 iterations) the main
 * thread removes it and wakes every worker (new generation, FUTEX_WAKE, a
 * byte on each pipe, eventfd add); each worker verifies its whole memory
 * and acknowledges; the main thread writes "ok <threads> <generation>\n" to
 * /tmp/check.out once all of them did, or "bad ..." if a worker found its
 * memory changed or the process no longer has 64 threads. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 63

static size_t words;
static _Atomic uint32_t gen;
static _Atomic int touched, acked, bad;

struct worker {
	int idx;
	uint64_t *mem;
	int pipe[2];
	int efd, ep;
};
static struct worker ws[WORKERS];

static uint64_t pattern(int idx, size_t i) {
	return (i + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)idx << 56 | 0x5a5a);
}

static void verify(struct worker *w) {
	for (size_t i = 0; i < words; i++)
		if (w->mem[i] != pattern(w->idx, i)) {
			atomic_fetch_add(&bad, 1);
			return;
		}
}

static void *work(void *arg) {
	struct worker *w = arg;
	char name[16];
	snprintf(name, sizeof name, "w%02d", w->idx);
	pthread_setname_np(pthread_self(), name);
	w->mem = malloc(words * 8);
	if (!w->mem)
		exit(2);
	for (size_t i = 0; i < words; i++)
		w->mem[i] = pattern(w->idx, i);
	uint32_t seen = atomic_load(&gen);
	atomic_fetch_add(&touched, 1);
	for (;;) {
		switch (w->idx % 4) {
		case 0: {
			struct timespec nap = {0, 2000000};
			nanosleep(&nap, NULL);
			break;
		}
		case 1:
			syscall(SYS_futex, &gen, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
			break;
		case 2: {
			char c;
			if (read(w->pipe[0], &c, 1) != 1)
				exit(3);
			break;
		}
		case 3: {
			struct epoll_event ev;
			if (epoll_wait(w->ep, &ev, 1, -1) == 1) {
				uint64_t v;
				if (read(w->efd, &v, 8) != 8)
					exit(4);
			}
			break;
		}
		}
		uint32_t g = atomic_load(&gen);
		if (g != seen) {
			seen = g;
			verify(w);
			atomic_fetch_add(&acked, 1);
		}
	}
	return NULL;
}

static void put(const char *path, const char *text) {
	char tmp[64];
	snprintf(tmp, sizeof tmp, "%s.new", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		exit(5);
	close(fd);
	rename(tmp, path);
}

static int64_t now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int nthreads(void) {
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void check(void) {
	int want = atomic_load(&acked) + WORKERS;
	uint32_t g = atomic_fetch_add(&gen, 1) + 1;
	syscall(SYS_futex, &gen, FUTEX_WAKE_PRIVATE, WORKERS, NULL, NULL, 0);
	for (int i = 0; i < WORKERS; i++) {
		if (i % 4 == 2 && write(ws[i].pipe[1], "x", 1) != 1)
			exit(6);
		uint64_t one = 1;
		if (i % 4 == 3 && write(ws[i].efd, &one, 8) != 8)
			exit(7);
	}
	int64_t deadline = now() + 20000000000ll;
	while (atomic_load(&acked) < want && now() < deadline) {
		struct timespec nap = {0, 1000000};
		nanosleep(&nap, NULL);
	}
	char out[128];
	int n = nthreads(), a = atomic_load(&acked) - (want - WORKERS), b = atomic_load(&bad);
	if (n == WORKERS + 1 && a == WORKERS && b == 0)
		snprintf(out, sizeof out, "ok %d %u\n", n, g);
	else
		snprintf(out, sizeof out, "bad threads %d acked %d/%d corrupted %d\n", n, a, WORKERS, b);
	put("/tmp/check.out", out);
}

int main(int argc, char **argv) {
	if (argc != 2)
		return 1;
	words = ((size_t)atoi(argv[1]) << 20) / 8;
	for (int i = 0; i < WORKERS; i++) {
		struct worker *w = &ws[i];
		w->idx = i;
		if (pipe(w->pipe))
			return 8;
		w->efd = eventfd(0, 0);
		w->ep = epoll_create1(0);
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
		if (w->efd < 0 || w->ep < 0 || epoll_ctl(w->ep, EPOLL_CTL_ADD, w->efd, &ev))
			return 9;
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 << 10);
		if (pthread_create(&t, &attr, work, w))
			return 10;
	}
	while (atomic_load(&touched) < WORKERS) {
		struct timespec nap = {0, 1000000};
		nanosleep(&nap, NULL);
	}
	int fd = open("/tmp/gaps", O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
	if (fd < 0)
		return 11;
	put("/tmp/ready", "ready");
	struct timespec nap = {0, 100000};
	int64_t prev = now();
	for (unsigned long it = 1;; it++) {
		nanosleep(&nap, NULL);
		int64_t t = now();
		if (t - prev > 1000000) {
			char line[64];
			int k = snprintf(line, sizeof line, "%lld %lld\n", (long long)t, (long long)(t - prev));
			if (write(fd, line, k) != k)
				return 12;
		}
		if (it % 1000 == 0) {
			struct stat st;
			if (stat("/tmp/check", &st) == 0) {
				unlink("/tmp/check");
				check();
				t = now();
			}
		}
		prev = t;
	}
}
