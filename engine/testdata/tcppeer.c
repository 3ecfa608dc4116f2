/* tcppeer: argv[1]: port of a TCP server on 127.0.0.1 outside the tree,
 * argv[2]: directory. Connects, then forever reads a number n (a line) from
 * the connection, answers n+1 and writes n to <dir>/count. The engine test
 * checkpoints it with the connection established to the outside peer. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
		return 1;
	char path[512];
	snprintf(path, sizeof path, "%s/count", argv[2]);
	char line[64];
	int len = 0;
	for (;;) {
		char c;
		if (read(s, &c, 1) != 1)
			return 2;
		if (c != '\n') {
			if (len < (int)sizeof line - 1)
				line[len++] = c;
			continue;
		}
		line[len] = 0;
		len = 0;
		long n = atol(line);
		char out[64];
		int m = snprintf(out, sizeof out, "%ld\n", n + 1);
		if (write(s, out, m) != m)
			return 3;
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		m = snprintf(out, sizeof out, "%ld\n", n);
		write(fd, out, m);
		close(fd);
		usleep(20000);
	}
}
