/* evloop: an epoll event loop for the engine tests.
 * argv[1]: a directory for the status files; argv[2]: a directory to watch.
 *
 * One epoll instance (level-triggered) holds a periodic timerfd (2 ms), a
 * signalfd for SIGUSR1 (blocked), an inotify instance watching argv[2] for
 * IN_CREATE, a one-shot timerfd armed for 1.5 s, and an eventfd holding 42
 * (edge-triggered, never read until the end) through a nested epoll. A file
 * is opened, written "ghost-content", unlinked, and kept at offset 6.
 * Each iteration rewrites <dir>/status with
 *   "<timer ticks> <signals> <inotify events> <one-shot expirations>".
 * When <dir>/go exists it writes <dir>/result:
 *   "eventfd=<value> ghost=<rest of the deleted file> name=<last created name>".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

static void add(int ep, int fd, uint32_t events) {
	struct epoll_event ev = {.events = events, .data.fd = fd};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		exit(3);
}

int main(int argc, char **argv) {
	const char *dir = argv[1];
	char path[512], gopath[512];
	snprintf(path, sizeof path, "%s/ghost", dir);
	int ghost = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	write(ghost, "ghost-content", 13);
	lseek(ghost, 6, SEEK_SET);
	unlink(path);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	int tick = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct itimerspec its = {.it_interval = {0, 2000000}, .it_value = {0, 2000000}};
	timerfd_settime(tick, 0, &its, NULL);
	int once = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	struct itimerspec one = {.it_value = {1, 500000000}};
	timerfd_settime(once, 0, &one, NULL);
	int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (inotify_add_watch(in, argv[2], IN_CREATE) != 1)
		return 2;
	int efd = eventfd(42, EFD_CLOEXEC | EFD_NONBLOCK);
	int inner = epoll_create1(EPOLL_CLOEXEC);
	add(inner, efd, EPOLLIN | EPOLLET);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	add(ep, tick, EPOLLIN);
	add(ep, sfd, EPOLLIN);
	add(ep, in, EPOLLIN);
	add(ep, once, EPOLLIN);
	add(ep, inner, EPOLLIN);
	snprintf(path, sizeof path, "%s/status", dir);
	snprintf(gopath, sizeof gopath, "%s/go", dir);
	int out = open(path, O_WRONLY | O_CREAT, 0644);
	long ticks = 0, sigs = 0, inots = 0, onces = 0;
	char last[256] = "none";
	int done = 0;
	for (;;) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, 100);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == tick || fd == once) {
				uint64_t v = 0;
				if (read(fd, &v, 8) == 8) {
					if (fd == tick)
						ticks += v;
					else
						onces += v;
				}
			} else if (fd == sfd) {
				struct signalfd_siginfo si;
				if (read(sfd, &si, sizeof si) == sizeof si)
					sigs++;
			} else if (fd == in) {
				char buf[4096] __attribute__((aligned(8)));
				int k = read(in, buf, sizeof buf);
				for (char *p = buf; k > 0 && p < buf + k;) {
					struct inotify_event *e = (struct inotify_event *)p;
					if (e->len)
						snprintf(last, sizeof last, "%s", e->name);
					inots++;
					p += sizeof *e + e->len;
				}
			} else if (fd == inner) {
				struct epoll_event ie;
				epoll_wait(inner, &ie, 1, 0); /* edge-triggered: consumed */
			}
		}
		char line[128];
		int len = snprintf(line, sizeof line, "%ld %ld %ld %ld\n", ticks, sigs, inots, onces);
		pwrite(out, line, len, 0);
		if (!done && access(gopath, F_OK) == 0) {
			uint64_t v = 0;
			read(efd, &v, 8);
			char rest[64] = {0};
			read(ghost, rest, sizeof rest - 1);
			char res[512];
			snprintf(path, sizeof path, "%s/result", dir);
			int r = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			len = snprintf(res, sizeof res, "eventfd=%lu ghost=%s name=%s\n", (unsigned long)v, rest, last);
			write(r, res, len);
			close(r);
			done = 1;
		}
	}
}
