/* locks: advisory locks for the engine tests. argv[1]: directory.
 * <dir>/data is opened three times: fd A holds a POSIX write lock on bytes
 * 10-19 and a POSIX read lock from 50 to EOF, fd B a flock(LOCK_EX), fd C an
 * OFD write lock on bytes 30-39. <dir>/fds gets "A B C"; then the program
 * counts, rewriting "<count>\n" at offset 0 of <dir>/count every millisecond.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <unistd.h>

static int lock(int fd, int cmd, short type, off_t start, off_t len) {
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	return fcntl(fd, cmd, &fl);
}

int main(int argc, char **argv) {
	char path[512], line[64];
	snprintf(path, sizeof path, "%s/data", argv[1]);
	int a = open(path, O_RDWR | O_CREAT, 0644);
	ftruncate(a, 100);
	int b = open(path, O_RDWR);
	int c = open(path, O_RDWR);
	if (lock(a, F_SETLK, F_WRLCK, 10, 10) || lock(a, F_SETLK, F_RDLCK, 50, 0) || flock(b, LOCK_EX | LOCK_NB) ||
	    lock(c, F_OFD_SETLK, F_WRLCK, 30, 10))
		return 1;
	snprintf(path, sizeof path, "%s/fds", argv[1]);
	FILE *f = fopen(path, "w");
	fprintf(f, "%d %d %d\n", a, b, c);
	fclose(f);
	snprintf(path, sizeof path, "%s/count", argv[1]);
	int out = open(path, O_WRONLY | O_CREAT, 0644);
	for (long n = 1;; n++) {
		int len = snprintf(line, sizeof line, "%020ld\n", n);
		pwrite(out, line, len, 0);
		usleep(1000);
	}
}
