/* secure: credentials, capabilities, seccomp and signal state for the engine tests.
 * argv[1]: status file; argv[2]: a directory to chdir into.
 * Sets umask 027, RLIMIT_NOFILE 512/1024, groups 10 20, uid/gid 1000 keeping
 * CAP_NET_BIND_SERVICE (also ambient), drops CAP_NET_RAW from the bounding
 * set, no_new_privs, a seccomp filter making uname() fail with errno 42, and
 * leaves SIGUSR1 (process) and SIGUSR2 (thread) pending and blocked.
 * It is also a child subreaper and not dumpable.
 * Status: "<counter> <uid> <euid> <uname errno> <umask> <cwd ok> <subreaper> <dumpable>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(int argc, char **argv) {
	int out = open(argv[1], O_WRONLY | O_CREAT, 0666);
	chdir(argv[2]);
	umask(027);
	struct rlimit rl = {512, 1024};
	setrlimit(RLIMIT_NOFILE, &rl);
	gid_t groups[] = {10, 20};
	setgroups(2, groups);
	prctl(PR_CAPBSET_DROP, CAP_NET_RAW);
	prctl(PR_SET_KEEPCAPS, 1);
	setresgid(1000, 1000, 1000);
	setresuid(1000, 1000, 1000);
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2] = {{0}};
	d[0].effective = d[0].permitted = d[0].inheritable = 1 << CAP_NET_BIND_SERVICE;
	syscall(SYS_capset, &h, d);
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0);
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_uname, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 42),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {4, f};
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	prctl(PR_SET_DUMPABLE, 0);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	kill(getpid(), SIGUSR1);
	raise(SIGUSR2);
	char line[256], cwd[512];
	for (long counter = 1;; counter++) {
		struct utsname u;
		errno = 0;
		int e = uname(&u) < 0 ? errno : 0;
		mode_t m = umask(0);
		umask(m);
		int cwd_ok = getcwd(cwd, sizeof cwd) && strcmp(cwd, argv[2]) == 0;
		int sub = 0;
		prctl(PR_GET_CHILD_SUBREAPER, &sub);
		int len = snprintf(line, sizeof line, "%020ld %d %d %d %o %d %d %d\n", counter, getuid(), geteuid(), e, m, cwd_ok, sub,
				   prctl(PR_GET_DUMPABLE));
		pwrite(out, line, len, 0);
		usleep(1000);
	}
}
