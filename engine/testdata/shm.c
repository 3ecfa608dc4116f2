/* shm: shared memory for the engine tests. argv[1]: directory.
 * A MAP_SHARED|MAP_ANONYMOUS page shared by parent and child (each counts in
 * its own slot and reports the other's), a sealed memfd mapped shared by the
 * parent and read through its fd by the child, and a MAP_SHARED mapping of
 * <dir>/shared.dat where the parent stores its counter.
 * <dir>/parent: "<count> <child's slot>"; <dir>/child: "<count> <parent's slot> <memfd value>".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
	char path[512], line[256];
	volatile long *anon = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int mfd = memfd_create("cryo-test", MFD_ALLOW_SEALING);
	ftruncate(mfd, 8192);
	volatile long *mem = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
	snprintf(path, sizeof path, "%s/shared.dat", argv[1]);
	int ffd = open(path, O_RDWR | O_CREAT, 0644);
	ftruncate(ffd, 4096);
	volatile long *file = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ffd, 0);
	close(ffd);
	pid_t child = fork();
	snprintf(path, sizeof path, "%s/%s", argv[1], child == 0 ? "child" : "parent");
	int out = open(path, O_WRONLY | O_CREAT, 0644);
	for (long n = 1;; n++) {
		int len;
		if (child == 0) {
			anon[1] = n;
			long v = 0;
			pread(mfd, &v, sizeof v, 4096);
			len = snprintf(line, sizeof line, "%020ld %ld %ld\n", n, anon[0], v);
		} else {
			anon[0] = n;
			mem[512] = n;
			file[0] = n;
			len = snprintf(line, sizeof line, "%020ld %ld\n", n, anon[1]);
		}
		pwrite(out, line, len, 0);
		usleep(1000);
	}
}
