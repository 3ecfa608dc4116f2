/* usock: unix sockets for the engine tests, run in a fresh net namespace.
 * argv[1]: a directory for the status files.
 *
 * root holds a stream socketpair, a datagram socketpair, a seqpacket
 * socketpair (each with bytes queued in one end), a listener on <dir>/srv.sock
 * and one on the abstract name "@usock", and the server ends of connections
 * accepted from both. Its child holds the client ends (with bytes queued on
 * both sides) and a third connection still waiting in the path listener's
 * queue. Both rewrite <dir>/<role> with "<counter>". When <dir>/go exists,
 * the child writes "late" on the pending connection and reads what the server
 * sent; root reads every queue, accepts the pending connection and reads it.
 * They write <dir>/result-<role>.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char *dir;

static socklen_t addr(struct sockaddr_un *sa, const char *name, int abstract) {
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (abstract) {
		strcpy(sa->sun_path + 1, name);
		return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
	}
	strcpy(sa->sun_path, name);
	return sizeof *sa;
}

static int rd(int fd, char *out) {
	char buf[64] = {0};
	int n = read(fd, buf, sizeof buf - 1);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	strcat(out, buf);
	strcat(out, "|");
	return n;
}

static void status(const char *role, long counter) {
	char path[512], line[64];
	snprintf(path, sizeof path, "%s/%s", dir, role);
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	int len = snprintf(line, sizeof line, "%020ld\n", counter);
	pwrite(fd, line, len, 0);
	close(fd);
}

static void result(const char *role, const char *s) {
	char path[512];
	snprintf(path, sizeof path, "%s/result-%s", dir, role);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	write(fd, s, strlen(s));
	write(fd, "\n", 1);
	close(fd);
}

static int go(void) {
	char path[512];
	snprintf(path, sizeof path, "%s/go", dir);
	return access(path, F_OK) == 0;
}

int main(int argc, char **argv) {
	dir = argv[1];
	char srv[256];
	snprintf(srv, sizeof srv, "%s/srv.sock", dir);
	struct sockaddr_un sa;
	int sp[2], dp[2], qp[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
	socketpair(AF_UNIX, SOCK_DGRAM, 0, dp);
	socketpair(AF_UNIX, SOCK_SEQPACKET, 0, qp);
	write(sp[1], "pair-data", 9);
	write(dp[1], "dg1", 3);
	write(dp[1], "dg22", 4);
	write(qp[1], "seq-msg", 7);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	unlink(srv);
	if (bind(l, (struct sockaddr *)&sa, addr(&sa, srv, 0)) || listen(l, 8))
		return 1;
	int la = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(la, (struct sockaddr *)&sa, addr(&sa, "usock", 1)) || listen(la, 8))
		return 1;
	pid_t child = fork();
	if (child == 0) {
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		int p = socket(AF_UNIX, SOCK_STREAM, 0);
		int a = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&sa, addr(&sa, srv, 0)) ||
		    connect(a, (struct sockaddr *)&sa, addr(&sa, "usock", 1)))
			return 2;
		write(c, "to-server", 9);
		write(a, "abs-data", 8);
		if (connect(p, (struct sockaddr *)&sa, addr(&sa, srv, 0)))
			return 2;
		int done = 0;
		for (long counter = 1;; counter++) {
			status("child", counter);
			if (!done && go()) {
				char out[512] = "";
				write(p, "late", 4);
				rd(c, out);
				result("child", out);
				done = 1;
			}
			usleep(1000);
		}
	}
	int ss = accept(l, NULL, NULL);
	int as = accept(la, NULL, NULL);
	write(ss, "to-client", 9);
	int done = 0;
	for (long counter = 1;; counter++) {
		status("root", counter);
		if (!done && go()) {
			char out[512] = "";
			rd(sp[0], out);
			rd(dp[0], out);
			rd(dp[0], out);
			rd(qp[0], out);
			rd(ss, out);
			struct sockaddr_un name;
			socklen_t len = sizeof name;
			getsockname(ss, (struct sockaddr *)&name, &len);
			strcat(out, strcmp(name.sun_path, srv) == 0 ? "name-ok|" : "name-bad|");
			rd(as, out);
			int ps = accept(l, NULL, NULL);
			rd(ps, out);
			result("root", out);
			done = 1;
		}
		usleep(1000);
	}
}
