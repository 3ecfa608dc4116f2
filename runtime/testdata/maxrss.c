/* maxrss: runs argv[2..] in a forked child and writes the child's maximum
 * resident set size (KiB, from wait4) to the file argv[1]; exits with the
 * child's status. The benchmarks measure a CLI's peak RSS through it: a
 * child forked by the (large) test binary would inherit its high-water mark. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 3)
		return 127;
	pid_t pid = fork();
	if (pid < 0)
		return 126;
	if (pid == 0) {
		execv(argv[2], argv + 2);
		_exit(127);
	}
	int status;
	struct rusage ru;
	if (wait4(pid, &status, 0, &ru) != pid)
		return 126;
	FILE *f = fopen(argv[1], "w");
	if (!f || fprintf(f, "%ld\n", ru.ru_maxrss) < 0 || fclose(f))
		return 126;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
