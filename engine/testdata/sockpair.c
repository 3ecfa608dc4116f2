/* sockpair: argv[1]: directory. A stream socketpair between parent and
 * child: the parent sends "sock-data" and shuts its sending side down; the
 * child counts in <dir>/child and, once <dir>/go exists, reads the socket to
 * the end and writes "<bytes> EOF" to <dir>/result. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	char path[512], line[128];
	int sv[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	if (fork() == 0) {
		close(sv[0]);
		snprintf(path, sizeof path, "%s/child", argv[1]);
		int out = open(path, O_WRONLY | O_CREAT, 0644);
		char gopath[512];
		snprintf(gopath, sizeof gopath, "%s/go", argv[1]);
		for (long n = 1; access(gopath, F_OK) != 0; n++) {
			int len = snprintf(line, sizeof line, "%020ld\n", n);
			pwrite(out, line, len, 0);
			usleep(1000);
		}
		char buf[64] = {0};
		int got = 0, k;
		while ((k = read(sv[1], buf + got, sizeof buf - 1 - got)) > 0)
			got += k;
		snprintf(path, sizeof path, "%s/result", argv[1]);
		int r = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int len = snprintf(line, sizeof line, "%s %s\n", buf, k == 0 ? "EOF" : "ERR");
		write(r, line, len);
		for (;;)
			pause();
	}
	close(sv[1]);
	write(sv[0], "sock-data", 9);
	shutdown(sv[0], SHUT_WR);
	for (;;)
		pause();
}
