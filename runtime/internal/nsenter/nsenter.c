//go:build cgo && linux

// Joining the user and time namespaces needs a single-threaded caller, which
// a Go program never is once its runtime has started. This constructor runs
// before the Go runtime, while the process still has one thread (the
// technique of runc's nsenter, written anew). Driven by environment
// variables, each removed once acted upon, in this order:
//
//   _CRYO_SETNS=5,6     join the namespaces of these open fds, in order, and
//                       close them (the caller puts the user namespace first)
//   _CRYO_SETNS_ROOT=1  then become root of the (joined) user namespace:
//                       setgroups(0) (may be denied: ignored), setresgid(0),
//                       setresuid(0)
//   _CRYO_UNSHARE=N     then unshare(N): namespaces created here belong to
//                       the user namespace joined above
//   _CRYO_FORK=1        then fork; the parent exits 0 at once and the child
//                       goes on (it is the one inside a joined or new pid
//                       namespace)
//
// On failure it reports on stderr and exits 125, so the caller sees the
// error instead of a process in the wrong namespaces.
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void cryo_fail(const char *what, long arg)
{
	fprintf(stderr, "cryo nsenter: %s %ld: %s\n", what, arg, strerror(errno));
	_exit(125);
}

// take returns the value of name and removes it from the environment (a
// copy in buf), or NULL when unset or empty.
static const char *take(const char *name, char *buf, size_t len)
{
	const char *v = getenv(name);
	if (v == NULL || *v == '\0')
		return NULL;
	strncpy(buf, v, len - 1);
	buf[len - 1] = '\0';
	unsetenv(name);
	return buf;
}

__attribute__((constructor)) static void cryo_nsenter(void)
{
	char list[256], root[8], unshare_flags[32], do_fork[8];
	const char *setns_list = take("_CRYO_SETNS", list, sizeof(list));
	const char *become_root = take("_CRYO_SETNS_ROOT", root, sizeof(root));
	const char *unshare_list = take("_CRYO_UNSHARE", unshare_flags, sizeof(unshare_flags));
	const char *fork_child = take("_CRYO_FORK", do_fork, sizeof(do_fork));

	if (setns_list != NULL) {
		for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
			char *end;
			long fd = strtol(tok, &end, 10);
			if (*end != '\0' || fd < 0) {
				errno = EINVAL;
				cryo_fail("bad fd in _CRYO_SETNS:", fd);
			}
			if (setns((int)fd, 0) < 0)
				cryo_fail("setns fd", fd);
			close((int)fd);
		}
	}
	if (become_root != NULL) {
		// Raw system calls: only this thread exists, and the libc
		// wrappers would try to broadcast them to other threads.
		if (syscall(SYS_setgroups, 0, NULL) < 0 && errno != EPERM)
			cryo_fail("setgroups", 0);
		if (syscall(SYS_setresgid, 0, 0, 0) < 0)
			cryo_fail("become root in the user namespace: setresgid", 0);
		if (syscall(SYS_setresuid, 0, 0, 0) < 0)
			cryo_fail("become root in the user namespace: setresuid", 0);
	}
	if (unshare_list != NULL) {
		char *end;
		long flags = strtol(unshare_flags, &end, 10);
		if (*end != '\0') {
			errno = EINVAL;
			cryo_fail("bad _CRYO_UNSHARE", flags);
		}
		if (unshare((int)flags) < 0)
			cryo_fail("unshare", flags);
	}
	if (fork_child != NULL) {
		pid_t pid = fork();
		if (pid < 0)
			cryo_fail("fork", 0);
		if (pid > 0)
			_exit(0);
	}
}
