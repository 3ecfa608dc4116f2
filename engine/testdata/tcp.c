/* tcp: TCP and UDP sockets for the engine tests, run in a fresh net namespace.
 * argv[1]: a directory for the status files.
 *
 * root brings lo up, listens on 127.0.0.1:7070 and binds a UDP socket to
 * 127.0.0.1:7071; its child connects to both (TCP_NODELAY and SO_KEEPALIVE on
 * its TCP socket). Before the dump, the child sends "hello-before" and the
 * datagram "udp-before", root sends "srv-before": nobody reads them. Both
 * rewrite <dir>/<role> with "<counter>". When <dir>/go exists:
 *   root reads the connection, answers "ack", reads the datagram (checking
 *        that it comes from the child's UDP port) and answers it, then accepts a
 *        new connection and echoes what it reads;
 *   child reads "srv-before" and "ack", the UDP answer, checks its socket
 *        options, then opens a new connection and sends "new-conn".
 * They write <dir>/result-<role>.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *dir;

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

/* readn reads exactly n bytes and appends them and "|" to out. */
static void readn(int fd, int n, char *out) {
	char buf[128] = {0};
	int got = 0;
	while (got < n) {
		int k = read(fd, buf + got, n - got);
		if (k <= 0)
			break;
		got += k;
	}
	buf[got] = 0;
	strcat(out, buf);
	strcat(out, "|");
}

static struct sockaddr_in addr(int port) {
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	return sa;
}

int main(int argc, char **argv) {
	dir = argv[1];
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr = {0};
	strcpy(ifr.ifr_name, "lo");
	ioctl(s, SIOCGIFFLAGS, &ifr);
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr))
		return 1;
	close(s);
	struct sockaddr_in ta = addr(7070), ua = addr(7071);
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(l, (struct sockaddr *)&ta, sizeof ta) || listen(l, 16))
		return 1;
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	if (bind(u, (struct sockaddr *)&ua, sizeof ua))
		return 1;
	pid_t child = fork();
	if (child == 0) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
		if (connect(c, (struct sockaddr *)&ta, sizeof ta))
			return 2;
		int cu = socket(AF_INET, SOCK_DGRAM, 0);
		if (connect(cu, (struct sockaddr *)&ua, sizeof ua))
			return 2;
		write(c, "hello-before", 12);
		send(cu, "udp-before", 10, 0);
		int done = 0;
		for (long counter = 1;; counter++) {
			status("child", counter);
			if (!done && go()) {
				char out[512] = "";
				readn(c, 10, out);
				readn(c, 3, out);
				char buf[64] = {0};
				int n = recv(cu, buf, sizeof buf - 1, 0);
				strcat(out, n > 0 ? buf : "no-udp");
				strcat(out, "|");
				int nd = 0, ka = 0;
				socklen_t len = sizeof nd;
				getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &nd, &len);
				getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &ka, &len);
				strcat(out, nd && ka ? "opts-ok|" : "opts-bad|");
				int c2 = socket(AF_INET, SOCK_STREAM, 0);
				if (connect(c2, (struct sockaddr *)&ta, sizeof ta) == 0) {
					write(c2, "new-conn", 8);
					readn(c2, 8, out);
				} else {
					strcat(out, "connect-failed|");
				}
				result("child", out);
				done = 1;
			}
			usleep(1000);
		}
	}
	int a = accept(l, NULL, NULL);
	write(a, "srv-before", 10);
	int done = 0;
	for (long counter = 1;; counter++) {
		status("root", counter);
		if (!done && go()) {
			char out[512] = "";
			readn(a, 12, out);
			write(a, "ack", 3);
			char buf[64] = {0};
			struct sockaddr_in from;
			socklen_t flen = sizeof from;
			int n = recvfrom(u, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &flen);
			strcat(out, n > 0 ? buf : "no-udp");
			strcat(out, from.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && from.sin_port != 0 ? ":from-ok|" : ":from-bad|");
			sendto(u, "udp-reply", 9, 0, (struct sockaddr *)&from, flen);
			int a2 = accept(l, NULL, NULL);
			char echo[16] = {0};
			int k = read(a2, echo, 8);
			write(a2, echo, k > 0 ? k : 0);
			strcat(out, echo);
			strcat(out, "|");
			result("root", out);
			done = 1;
		}
		usleep(1000);
	}
}
