/* stopped: a parent and a child that each count, rewriting "<count>\n" at
 * offset 0 of <dir>/parent and <dir>/child every millisecond. The test
 * stops the child with SIGSTOP before the dump.
 */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
	char path[512], line[64];
	pid_t child = fork();
	snprintf(path, sizeof path, "%s/%s", argv[1], child == 0 ? "child" : "parent");
	int out = open(path, O_WRONLY | O_CREAT, 0644);
	for (long n = 1;; n++) {
		int len = snprintf(line, sizeof line, "%020ld\n", n);
		pwrite(out, line, len, 0);
		usleep(1000);
	}
}
