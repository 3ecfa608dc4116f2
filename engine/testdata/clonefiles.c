/* clonefiles: argv[1]: directory. The parent clones a child with
 * CLONE_FILES (one fd table for both). Both count (<dir>/parent,
 * <dir>/child). Once <dir>/go exists the child opens a new file and writes
 * its fd number to <dir>/childfd; the parent, seeing that, checks that the
 * fd is open in its own table too and writes "shared <fd>" (or "private") to
 * <dir>/result. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *dir;
static char stack[1 << 16];

static void count(const char *role, int n) {
	char path[512], line[64];
	snprintf(path, sizeof path, "%s/%s", dir, role);
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	int len = snprintf(line, sizeof line, "%020d\n", n);
	pwrite(fd, line, len, 0);
	close(fd);
}

static int exists(const char *name) {
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

static int child(void *arg) {
	int opened = 0;
	for (int n = 1;; n++) {
		count("child", n);
		if (!opened && exists("go")) {
			char path[512], line[64];
			snprintf(path, sizeof path, "%s/fromchild", dir);
			int fd = open(path, O_WRONLY | O_CREAT, 0644);
			snprintf(path, sizeof path, "%s/childfd.tmp", dir);
			int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			int len = snprintf(line, sizeof line, "%d\n", fd);
			write(out, line, len);
			close(out);
			char final[512];
			snprintf(final, sizeof final, "%s/childfd", dir);
			rename(path, final);
			opened = 1;
		}
		usleep(1000);
	}
	return 0;
}

int main(int argc, char **argv) {
	dir = argv[1];
	clone(child, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL);
	int done = 0;
	for (int n = 1;; n++) {
		count("parent", n);
		if (!done && exists("childfd")) {
			char path[512], line[64];
			snprintf(path, sizeof path, "%s/childfd", dir);
			FILE *f = fopen(path, "r");
			int fd = -1;
			fscanf(f, "%d", &fd);
			fclose(f);
			snprintf(path, sizeof path, "%s/result", dir);
			int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			int len = fcntl(fd, F_GETFD) >= 0 ? snprintf(line, sizeof line, "shared %d\n", fd) : snprintf(line, sizeof line, "private\n");
			write(out, line, len);
			close(out);
			done = 1;
		}
		usleep(1000);
	}
}
