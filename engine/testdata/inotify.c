/* inotify: argv[1]: directory holding subdirectories a, b and c.
 * Watches a, b and c (descriptors 1, 2, 3), removes the watch of b, counts
 * in <dir>/status, and once <dir>/go exists creates a file in a and in c and
 * writes the descriptors of the two events it reads to <dir>/result. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(int argc, char **argv) {
	char path[512], line[128];
	int in = inotify_init1(IN_NONBLOCK);
	const char *names[] = {"a", "b", "c"};
	int wds[3];
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", argv[1], names[i]);
		wds[i] = inotify_add_watch(in, path, IN_CREATE);
	}
	inotify_rm_watch(in, wds[1]);
	char buf[4096];
	while (read(in, buf, sizeof buf) > 0) /* drop IN_IGNORED */
		;
	snprintf(path, sizeof path, "%s/status", argv[1]);
	int out = open(path, O_WRONLY | O_CREAT, 0644);
	char gopath[512];
	snprintf(gopath, sizeof gopath, "%s/go", argv[1]);
	for (long n = 1;; n++) {
		int len = snprintf(line, sizeof line, "%020ld\n", n);
		pwrite(out, line, len, 0);
		if (access(gopath, F_OK) == 0)
			break;
		usleep(1000);
	}
	for (int i = 0; i < 3; i += 2) {
		snprintf(path, sizeof path, "%s/%s/new", argv[1], names[i]);
		close(open(path, O_WRONLY | O_CREAT, 0644));
	}
	int got[2], k = 0;
	while (k < 2) {
		int n = read(in, buf, sizeof buf);
		for (int off = 0; n > 0 && off < n && k < 2;) {
			struct inotify_event *e = (struct inotify_event *)(buf + off);
			got[k++] = e->wd;
			off += sizeof *e + e->len;
		}
		usleep(1000);
	}
	snprintf(path, sizeof path, "%s/result", argv[1]);
	int r = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int len = snprintf(line, sizeof line, "%d %d\n", got[0], got[1]);
	write(r, line, len);
	for (;;)
		pause();
}
