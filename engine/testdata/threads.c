/* threads: a multi-threaded workload for the engine tests.
 * argv[1]: status file, rewritten with
 *   "<c0> <c1> <c2> <tid0> <tid1> <tid2> <alarms> <altstack ok> <tls ok> <ticks> <timer id>"
 * Three threads (main and two pthreads) count in thread-local variables; an
 * interval timer (ITIMER_REAL, 20 ms) delivers SIGALRM to a handler that
 * counts; thread 1 runs on a sigaltstack it checks every iteration. A POSIX
 * timer (the second one created, the first is deleted: ID 1) sends SIGUSR2
 * every 10 ms to a handler that counts ticks.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static __thread long tls;
static volatile long counters[3];
static volatile int tids[3];
static volatile int tls_ok = 1, alt_ok = 1;
static volatile long alarms;
static void *altmem;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void on_alarm(int sig) { alarms++; }
static volatile long ticks;
static void on_tick(int sig) { ticks++; }

static void *worker(void *arg) {
	long i = (long)arg;
	tids[i] = gettid();
	if (i == 1) {
		stack_t ss = {.ss_sp = altmem, .ss_size = 65536};
		sigaltstack(&ss, NULL);
	}
	for (;;) {
		pthread_mutex_lock(&mu);
		tls++;
		if (counters[i] != tls - 1)
			tls_ok = 0;
		counters[i] = tls;
		pthread_mutex_unlock(&mu);
		if (i == 1) {
			stack_t old;
			sigaltstack(NULL, &old);
			if (old.ss_sp != altmem || old.ss_size != 65536)
				alt_ok = 0;
		}
		usleep(1000);
	}
	return NULL;
}

int main(int argc, char **argv) {
	altmem = malloc(65536);
	signal(SIGALRM, on_alarm);
	struct itimerval it = {{0, 20000}, {0, 20000}};
	setitimer(ITIMER_REAL, &it, NULL);
	signal(SIGUSR2, on_tick);
	struct sigevent se = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2};
	timer_t t0, t1;
	timer_create(CLOCK_MONOTONIC, &se, &t0);
	timer_create(CLOCK_MONOTONIC, &se, &t1);
	timer_delete(t0);
	struct itimerspec its = {{0, 10000000}, {0, 10000000}};
	timer_settime(t1, 0, &its, NULL);
	pthread_t t;
	pthread_create(&t, NULL, worker, (void *)1);
	pthread_create(&t, NULL, worker, (void *)2);
	int out = open(argv[1], O_WRONLY | O_CREAT, 0644);
	tids[0] = gettid();
	char line[256];
	for (;;) {
		pthread_mutex_lock(&mu);
		tls++;
		if (counters[0] != tls - 1)
			tls_ok = 0;
		counters[0] = tls;
		int len = snprintf(line, sizeof line, "%ld %ld %ld %d %d %d %ld %d %d %ld %ld\n", counters[0], counters[1],
				   counters[2], tids[0], tids[1], tids[2], alarms, alt_ok, tls_ok, ticks, (long)t1);
		pthread_mutex_unlock(&mu);
		pwrite(out, line, len, 0);
		usleep(1000);
	}
}
