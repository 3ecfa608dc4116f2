/* clock: writes "<CLOCK_MONOTONIC ns> <CLOCK_BOOTTIME ns> <counter>" to argv[1]. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t c) {
	struct timespec ts;
	clock_gettime(c, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
	int out = open(argv[1], O_WRONLY | O_CREAT, 0644);
	char line[128];
	for (long n = 1;; n++) {
		int len = snprintf(line, sizeof line, "%020lld %020lld %020ld\n", ns(CLOCK_MONOTONIC), ns(CLOCK_BOOTTIME), n);
		pwrite(out, line, len, 0);
		usleep(1000);
	}
}
