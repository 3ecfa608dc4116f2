/* memhog: touches argv[1] MiB of anonymous memory with a pattern, writes
 * "ready" to argv[2], then sleeps forever. Used by the engine benchmarks. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	size_t n = (size_t)atoi(argv[1]) << 20;
	unsigned char *p = malloc(n);
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 7 + 3);
	int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	write(fd, "ready", 5);
	close(fd);
	for (;;)
		pause();
}
