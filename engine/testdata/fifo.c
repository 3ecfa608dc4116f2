/* fifo: argv[1]: directory. Creates <dir>/fifo; a child writes "fifo-data"
 * into it and counts in <dir>/child; the parent holds the read end and, once
 * <dir>/go exists, reads it and writes what it got to <dir>/result. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
	char path[512], line[128];
	snprintf(path, sizeof path, "%s/fifo", argv[1]);
	mkfifo(path, 0600);
	if (fork() == 0) {
		int w = open(path, O_WRONLY);
		write(w, "fifo-data", 9);
		snprintf(path, sizeof path, "%s/child", argv[1]);
		int out = open(path, O_WRONLY | O_CREAT, 0644);
		for (long n = 1;; n++) {
			int len = snprintf(line, sizeof line, "%020ld\n", n);
			pwrite(out, line, len, 0);
			usleep(1000);
		}
	}
	int r = open(path, O_RDONLY);
	snprintf(path, sizeof path, "%s/go", argv[1]);
	while (access(path, F_OK) != 0)
		usleep(1000);
	char buf[64] = {0};
	int n = read(r, buf, sizeof buf - 1);
	snprintf(path, sizeof path, "%s/result", argv[1]);
	int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	write(out, buf, n > 0 ? n : 0);
	write(out, "\n", 1);
	for (;;)
		pause();
}
