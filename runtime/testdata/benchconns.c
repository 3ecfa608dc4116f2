/* benchconns: the many-connections workload of the runtime benchmarks
 * (runtime/bench5_linux_test.go).
 *
 *   benchconns N
 *
 * An epoll echo server listening on 127.0.0.1:7070 forks a client that
 * opens N TCP connections to it (N+1 sockets in the server, N in the
 * client, all in the container's network namespace). Each connection
 * echoes once, then the client writes "ready" to /tmp/ready and loops: it
 * reads CLOCK_MONOTONIC every ~100 us and appends every gap over 1 ms to
 * /tmp/gaps as "<end_ns> <gap_ns>\n" (benchhog's stall log), and every
 * tenth iteration echoes an 8-byte sequence number over the next
 * connection, round robin, checking what comes back.
 *
 * When /tmp/check appears (looked for every ~1000 iterations) the client
 * removes it, echoes once over every connection and writes
 * "ok <N> <echoes>\n" to /tmp/check.out, or "bad ..." if a connection did
 * not echo its number back. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PORT 7070

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

static void serve(int ls) {
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev))
		exit(20);
	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			exit(21);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == ls) {
				int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
				if (c < 0)
					continue;
				struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
				if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev))
					exit(22);
				continue;
			}
			char buf[256];
			ssize_t k = read(fd, buf, sizeof buf);
			if (k <= 0) {
				close(fd);
				continue;
			}
			if (write(fd, buf, k) != k)
				exit(23);
		}
	}
}

static int nconns, *conns;
static uint64_t *seq, echoes;

/* echo sends the connection's next number and reads it back. */
static int echo(int i) {
	uint64_t v = ++seq[i], got;
	if (write(conns[i], &v, 8) != 8)
		return -1;
	size_t have = 0;
	while (have < 8) {
		ssize_t k = read(conns[i], (char *)&got + have, 8 - have);
		if (k <= 0)
			return -1;
		have += k;
	}
	echoes++;
	return got == v ? 0 : -1;
}

static void client(void) {
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	conns = calloc(nconns, sizeof *conns);
	seq = calloc(nconns, sizeof *seq);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < nconns; i++) {
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
		if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa))
			exit(30);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		conns[i] = s;
		if (echo(i))
			exit(31);
	}
	int fd = open("/tmp/gaps", O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
	if (fd < 0)
		exit(32);
	put("/tmp/ready", "ready");
	struct timespec nap = {0, 100000};
	int64_t prev = now();
	int next = 0;
	for (unsigned long it = 1;; it++) {
		nanosleep(&nap, NULL);
		int64_t t = now();
		if (t - prev > 1000000) {
			char line[64];
			int k = snprintf(line, sizeof line, "%lld %lld\n", (long long)t, (long long)(t - prev));
			if (write(fd, line, k) != k)
				exit(33);
		}
		if (it % 10 == 0) {
			if (echo(next)) {
				char out[96];
				snprintf(out, sizeof out, "bad connection %d did not echo\n", next);
				put("/tmp/check.out", out);
				exit(34);
			}
			next = (next + 1) % nconns;
		}
		if (it % 1000 == 0) {
			struct stat st;
			if (stat("/tmp/check", &st) == 0) {
				unlink("/tmp/check");
				char out[96];
				int i;
				for (i = 0; i < nconns; i++)
					if (echo(i))
						break;
				if (i == nconns)
					snprintf(out, sizeof out, "ok %d %llu\n", nconns, (unsigned long long)echoes);
				else
					snprintf(out, sizeof out, "bad connection %d did not echo\n", i);
				put("/tmp/check.out", out);
				t = now();
			}
		}
		prev = t;
	}
}

int main(int argc, char **argv) {
	if (argc != 2)
		return 1;
	nconns = atoi(argv[1]);
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
	    bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4096))
		return 2;
	pid_t pid = fork();
	if (pid < 0)
		return 3;
	if (pid == 0) {
		close(ls);
		client();
	}
	serve(ls);
}
