/* echo: stdio for the engine tests. Reads stdin without blocking and writes
 * "got <line>" to stdout; writes "tick <n>" every 10 iterations. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
	fcntl(0, F_SETFL, O_NONBLOCK);
	char buf[256], line[300];
	for (long n = 1;; n++) {
		int k = read(0, buf, sizeof buf - 1);
		if (k > 0) {
			buf[k] = 0;
			int len = snprintf(line, sizeof line, "got %s", buf);
			write(1, line, len);
		}
		if (n % 10 == 0) {
			int len = snprintf(line, sizeof line, "tick %ld\n", n);
			write(1, line, len);
		}
		usleep(1000);
	}
}
