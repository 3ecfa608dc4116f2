//go:build cgo && linux

// Joining the user and time namespaces needs a single-threaded caller, which
// a Go program never is once its runtime has started. This constructor runs
// before the Go runtime, while the process still has one thread (the
// technique of runc's nsenter, written anew): if _CRYO_SETNS lists open
// namespace fds ("5,6"), it joins each of them in order, closes them and
// removes the variable, then lets Go start. On failure it reports on stderr
// and exits 125, so the caller sees the error instead of a process in the
// wrong namespaces.
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void cryo_nsenter(void)
{
	const char *list = getenv("_CRYO_SETNS");
	if (list == NULL || *list == '\0')
		return;
	char buf[256];
	strncpy(buf, list, sizeof(buf) - 1);
	buf[sizeof(buf) - 1] = '\0';
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		long fd = strtol(tok, &end, 10);
		if (*end != '\0' || fd < 0) {
			fprintf(stderr, "cryo nsenter: bad fd %s in _CRYO_SETNS\n", tok);
			_exit(125);
		}
		if (setns((int)fd, 0) < 0) {
			fprintf(stderr, "cryo nsenter: setns fd %ld: %s\n", fd, strerror(errno));
			_exit(125);
		}
		close((int)fd);
	}
	unsetenv("_CRYO_SETNS");
}
