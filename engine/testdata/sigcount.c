/* sigcount: counts the SIGRTMIN it receives (real-time signals queue: none
 * is merged) in 4 MiB of touched memory, and writes the count to argv[1]
 * every 10 ms: "<count>\n". */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t count;

static void on_sig(int sig) {
	(void)sig;
	count++;
}

int main(int argc, char **argv) {
	if (argc != 2)
		return 1;
	char *mem = malloc(4 << 20);
	if (!mem)
		return 2;
	memset(mem, 7, 4 << 20);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sig;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGRTMIN, &sa, NULL);
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.new", argv[1]);
	for (;;) {
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			return 3;
		char line[32];
		int k = snprintf(line, sizeof line, "%d\n", (int)count);
		if (write(fd, line, k) != k)
			return 4;
		close(fd);
		rename(tmp, argv[1]);
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
}
