// mtblock: a multi-threaded glibc program whose threads spend their time
// blocked in different system calls. The main thread drives them: every
// 5 ms it bumps a futex word and wakes it, writes a sequence number to a
// pipe, and adds 1 to an eventfd.
//   futex:  FUTEX_WAIT on the word, counts the values it sees;
//   sleep:  nanosleep of 150 ms at a time (a long sleep cut by the checkpoint);
//   pipe:   read() on the pipe, checks the sequence numbers arrive in order;
//   epoll:  epoll_wait(-1) on the eventfd, sums the values it reads;
//   cond:   pthread_cond_wait on a condition variable signalled by main.
// Every 20 ms main writes
//   "main futex sleep pipe epoll cond errors"
// to /tmp/mt.status. errors counts a pipe sequence gap or an eventfd total
// larger than what main wrote.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_uint word;
static atomic_long c_main, c_futex, c_sleep, c_pipe, c_epoll, c_cond, errs;
static int pfd[2], efd, ep;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long cond_gen;

static void *futex_thread(void *arg) {
	unsigned seen = atomic_load(&word);
	for (;;) {
		syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
		unsigned now = atomic_load(&word);
		if (now != seen) {
			seen = now;
			atomic_fetch_add(&c_futex, 1);
		}
	}
	return arg;
}

static void *sleep_thread(void *arg) {
	for (;;) {
		struct timespec ts = {0, 150 * 1000 * 1000};
		while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
		atomic_fetch_add(&c_sleep, 1);
	}
	return arg;
}

static void *pipe_thread(void *arg) {
	uint32_t want = 1, got;
	for (;;) {
		ssize_t n = read(pfd[0], &got, sizeof got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n != sizeof got || got != want) {
			atomic_fetch_add(&errs, 1);
			want = got;
		}
		want++;
		atomic_fetch_add(&c_pipe, 1);
	}
	return arg;
}

static void *epoll_thread(void *arg) {
	for (;;) {
		struct epoll_event ev;
		int n = epoll_wait(ep, &ev, 1, -1);
		if (n == 1) {
			uint64_t v;
			if (read(efd, &v, sizeof v) == sizeof v)
				atomic_fetch_add(&c_epoll, (long)v);
			if (atomic_load(&c_epoll) > atomic_load(&c_main))
				atomic_fetch_add(&errs, 1);
		}
	}
	return arg;
}

static void *cond_thread(void *arg) {
	long seen = 0;
	pthread_mutex_lock(&mu);
	for (;;) {
		while (cond_gen == seen)
			pthread_cond_wait(&cv, &mu);
		seen = cond_gen;
		atomic_fetch_add(&c_cond, 1);
	}
	return arg;
}

int main(void) {
	if (pipe(pfd) || (efd = eventfd(0, 0)) < 0 || (ep = epoll_create1(0)) < 0) {
		perror("setup");
		return 1;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = efd};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev)) {
		perror("epoll_ctl");
		return 1;
	}
	void *(*fns[])(void *) = {futex_thread, sleep_thread, pipe_thread, epoll_thread, cond_thread};
	const char *names[] = {"futex", "sleep", "pipe", "epoll", "cond"};
	for (int i = 0; i < 5; i++) {
		pthread_t th;
		if (pthread_create(&th, NULL, fns[i], NULL)) {
			perror("pthread_create");
			return 1;
		}
		pthread_setname_np(th, names[i]);
	}
	for (uint32_t seq = 1;; seq++) {
		atomic_fetch_add(&c_main, 1);
		atomic_fetch_add(&word, 1);
		syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
		if (write(pfd[1], &seq, sizeof seq) != sizeof seq)
			atomic_fetch_add(&errs, 1);
		uint64_t one = 1;
		if (write(efd, &one, sizeof one) != sizeof one)
			atomic_fetch_add(&errs, 1);
		pthread_mutex_lock(&mu);
		cond_gen++;
		pthread_cond_signal(&cv);
		pthread_mutex_unlock(&mu);
		if (seq % 4 == 0) {
			FILE *f = fopen("/tmp/mt.status.new", "w");
			if (f) {
				fprintf(f, "%ld %ld %ld %ld %ld %ld %ld\n", atomic_load(&c_main), atomic_load(&c_futex),
					atomic_load(&c_sleep), atomic_load(&c_pipe), atomic_load(&c_epoll),
					atomic_load(&c_cond), atomic_load(&errs));
				fclose(f);
				rename("/tmp/mt.status.new", "/tmp/mt.status");
			}
		}
		struct timespec ts = {0, 5 * 1000 * 1000};
		while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
	}
}
