/* incr: the incremental-checkpoint workload.
 * argv[1]: MiB of anonymous memory, filled with a pattern at start.
 * argv[2]: status file, rewritten at offset 0 every millisecond with
 *          "<seq> <round> <checksum> <counter>".
 * SIGUSR1: next round r: every page i with i % 100 == r % 100 (1% of them)
 *          gets a new word, then the checksum is recomputed (seq + 1).
 * SIGUSR2: recompute the checksum of the whole area (seq + 1).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t want_round, want_sum;
static void on_usr1(int s) { want_round = 1; }
static void on_usr2(int s) { want_sum = 1; }

int main(int argc, char **argv) {
	size_t n = (size_t)atoi(argv[1]) << 20, pages = n / 4096;
	unsigned long *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (size_t i = 0; i < n / 8; i++)
		p[i] = i * 0x9e3779b97f4a7c15UL;
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	int out = open(argv[2], O_WRONLY | O_CREAT, 0644);
	long seq = 0, round = 0, counter = 0;
	unsigned long sum = 0;
	want_sum = 1;
	char line[128];
	for (;;) {
		if (want_round) {
			want_round = 0;
			round++;
			for (size_t i = round % 100; i < pages; i += 100)
				p[i * 512 + round % 512] ^= round * 1000003 + i;
			want_sum = 1;
		}
		if (want_sum) {
			want_sum = 0;
			sum = 1469598103934665603UL;
			for (size_t i = 0; i < n / 8; i++)
				sum = (sum ^ p[i]) * 1099511628211UL;
			seq++;
		}
		counter++;
		int len = snprintf(line, sizeof line, "%ld %ld %016lx %020ld\n", seq, round, sum, counter);
		pwrite(out, line, len, 0);
		usleep(1000);
	}
}
