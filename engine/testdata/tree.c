/* tree: a process tree for the engine tests.
 * argv[1]: a directory for the status files.
 *
 * root (pid 1) creates a pipe holding "hello-pipe" and a log file, then forks
 *   zombie  exits with status 7 and is not reaped until <dir>/go exists
 *   a       its own process group; forks d, which stays in a's group
 *   b       its own session; forks c
 * Every live process rewrites <dir>/<role> with
 *   "<counter> <pid> <ppid> <pgid> <sid>" and appends one byte to the shared
 * log description every 10 iterations. When <dir>/go exists, root reads the
 * pipe, reaps the zombie and writes <dir>/result: "<pipe bytes> <pid> <status>".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *dir;
static int pipefd[2], logfd;
static pid_t zombie;

static void loop(const char *role) {
	char path[512], line[256];
	snprintf(path, sizeof path, "%s/%s", dir, role);
	int out = open(path, O_WRONLY | O_CREAT, 0644);
	snprintf(path, sizeof path, "%s/go", dir);
	int done = 0;
	for (long counter = 1;; counter++) {
		int len = snprintf(line, sizeof line, "%020ld %d %d %d %d\n", counter, getpid(), getppid(), getpgid(0), getsid(0));
		pwrite(out, line, len, 0);
		if (counter % 10 == 0)
			write(logfd, role, 1);
		if (!done && strcmp(role, "root") == 0 && access(path, F_OK) == 0) {
			char buf[64] = {0};
			int n = read(pipefd[0], buf, sizeof buf - 1);
			int st = 0;
			pid_t w = waitpid(zombie, &st, WNOHANG);
			char res[512];
			snprintf(path, sizeof path, "%s/result", dir);
			int r = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			len = snprintf(res, sizeof res, "%.*s %d %d\n", n > 0 ? n : 0, buf, w, st);
			write(r, res, len);
			close(r);
			done = 1;
		}
		usleep(1000);
	}
}

int main(int argc, char **argv) {
	dir = argv[1];
	char path[512];
	snprintf(path, sizeof path, "%s/log", dir);
	logfd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	pipe(pipefd);
	write(pipefd[1], "hello-pipe", 10);
	zombie = fork();
	if (zombie == 0)
		_exit(7);
	siginfo_t si;
	waitid(P_PID, zombie, &si, WEXITED | WNOWAIT);
	if (fork() == 0) {
		setpgid(0, 0);
		if (fork() == 0)
			loop("d");
		loop("a");
	}
	if (fork() == 0) {
		setsid();
		if (fork() == 0)
			loop("c");
		loop("b");
	}
	loop("root");
}
