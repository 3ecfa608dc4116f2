/* counter: the first workload of the engine tests.
 * argv[1]: status file, rewritten at offset 0 on every iteration with
 *          "<counter> <heap ok> <offset of the data fd> <getpid()>".
 * argv[2]: data file, kept open at offset 12345.
 * argv[3]: optional "socket": also hold a netlink socket (which the engine refuses).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	size_t n = 1 << 20;
	unsigned char *buf = malloc(n);
	for (size_t i = 0; i < n; i++)
		buf[i] = (i * 7 + 3) & 0xff;
	int data = open(argv[2], O_RDONLY);
	lseek(data, 12345, SEEK_SET);
	int out = open(argv[1], O_WRONLY | O_CREAT, 0644);
	int sv[2];
	if (argc > 3 && strcmp(argv[3], "socket") == 0)
		sv[0] = socket(AF_NETLINK, SOCK_RAW, 0);
	volatile long counter = 0;
	char line[256];
	for (;;) {
		counter++;
		int ok = 1;
		for (size_t i = 0; i < n; i += 511)
			if (buf[i] != ((i * 7 + 3) & 0xff))
				ok = 0;
		long off = lseek(data, 0, SEEK_CUR);
		int len = snprintf(line, sizeof line, "%020ld %d %ld %d\n", counter, ok, off, getpid());
		pwrite(out, line, len, 0);
		usleep(1000);
	}
}
