/* timens_exec: argv[1], argv[2]: CLOCK_MONOTONIC and CLOCK_BOOTTIME offsets
 * in ns; argv[3]: a program. Unshares a time namespace, sets its offsets and
 * execs the program, which enters the namespace on exec. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int put(int fd, int clock, long long ns) {
	long long sec = ns / 1000000000LL, nsec = ns % 1000000000LL;
	if (nsec < 0) {
		sec--;
		nsec += 1000000000LL;
	}
	char buf[128];
	int n = snprintf(buf, sizeof buf, "%d %lld %lld", clock, sec, nsec);
	return write(fd, buf, n) == n ? 0 : -1;
}

int main(int argc, char **argv) {
	if (unshare(CLONE_NEWTIME) < 0) {
		perror("unshare");
		return 1;
	}
	int fd = open("/proc/self/timens_offsets", O_WRONLY);
	if (fd < 0 || put(fd, CLOCK_MONOTONIC, atoll(argv[1])) < 0 || put(fd, CLOCK_BOOTTIME, atoll(argv[2])) < 0) {
		perror("timens_offsets");
		return 1;
	}
	close(fd);
	execv(argv[3], argv + 3);
	perror("execv");
	return 1;
}
