package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// preparedProcess is a process whose executable was found and whose
// per-process settings were applied; only credentials and the execve remain.
type preparedProcess struct {
	p     *specs.Process
	path  string
	env   []string
	caps  caps
	elfFD int
	spec  *specs.Spec
}

var rlimitTypes = map[string]int{
	"RLIMIT_CPU": unix.RLIMIT_CPU, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_DATA": unix.RLIMIT_DATA,
	"RLIMIT_STACK": unix.RLIMIT_STACK, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
}

var ioprioClasses = map[specs.IOPriorityClass]int{
	specs.IOPRIO_CLASS_RT: 1, specs.IOPRIO_CLASS_BE: 2, specs.IOPRIO_CLASS_IDLE: 3,
}

var schedPolicies = map[specs.LinuxSchedulerPolicy]uint32{
	specs.SchedOther: 0, specs.SchedFIFO: 1, specs.SchedRR: 2, specs.SchedBatch: 3,
	specs.SchedISO: 4, specs.SchedIdle: 5, specs.SchedDeadline: 6,
}

var schedFlags = map[specs.LinuxSchedulerFlag]uint64{
	specs.SchedFlagResetOnFork: 0x01, specs.SchedFlagReclaim: 0x02, specs.SchedFlagDLOverrun: 0x04,
	specs.SchedFlagKeepPolicy: 0x08, specs.SchedFlagKeepParams: 0x10, specs.SchedFlagUtilClampMin: 0x20,
	specs.SchedFlagUtilClampMax: 0x40,
}

// checkProcess validates what can be checked on the host before anything is
// created: capability names and that they are grantable, rlimit names,
// scheduler and I/O priority values.
func checkProcess(p *specs.Process) error {
	c, err := parseCaps(p.Capabilities)
	if err != nil {
		return err
	}
	var have capSet
	last := lastCap()
	for i := 0; i <= last; i++ {
		r, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(i), 0, 0, 0)
		if err == nil && r == 1 {
			have |= 1 << uint(i)
		}
	}
	if missing := (c.Bounding | c.Effective | c.Permitted | c.Inheritable | c.Ambient) &^ have; missing != 0 {
		return fmt.Errorf("capabilities %v are not in this runtime's bounding set and cannot be granted: %w",
			missing.names(), ErrNotSupported)
	}
	for _, rl := range p.Rlimits {
		if _, ok := rlimitTypes[rl.Type]; !ok {
			return fmt.Errorf("unknown rlimit %q: %w", rl.Type, ErrInvalidConfig)
		}
	}
	if p.IOPriority != nil {
		if _, ok := ioprioClasses[p.IOPriority.Class]; !ok {
			return fmt.Errorf("unknown ioPriority class %q: %w", p.IOPriority.Class, ErrInvalidConfig)
		}
		if p.IOPriority.Priority < 0 || p.IOPriority.Priority > 7 {
			return fmt.Errorf("ioPriority %d out of 0..7: %w", p.IOPriority.Priority, ErrInvalidConfig)
		}
	}
	if s := p.Scheduler; s != nil {
		if _, ok := schedPolicies[s.Policy]; !ok {
			return fmt.Errorf("unknown scheduler policy %q: %w", s.Policy, ErrInvalidConfig)
		}
		for _, f := range s.Flags {
			if _, ok := schedFlags[f]; !ok {
				return fmt.Errorf("unknown scheduler flag %q: %w", f, ErrInvalidConfig)
			}
		}
	}
	if p.ApparmorProfile != "" {
		return fmt.Errorf("apparmorProfile %q: no AppArmor on this host: %w", p.ApparmorProfile, ErrNotSupported)
	}
	if p.SelinuxLabel != "" {
		return fmt.Errorf("selinuxLabel %q: no SELinux on this host: %w", p.SelinuxLabel, ErrNotSupported)
	}
	return nil
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return len(capNames) - 1
}

// prepareProcess runs in the init inside the container's root: it finds the
// executable, sets cwd, rlimits, I/O priority and scheduler, so that every
// error that can be reported before `start` is.
func prepareProcess(cfg *initConfig) (*preparedProcess, error) {
	p := cfg.Process
	px := &preparedProcess{p: p, elfFD: cfg.ELFFD, spec: cfg.Spec}
	var err error
	if px.caps, err = parseCaps(p.Capabilities); err != nil {
		return nil, err
	}
	px.env = append([]string{}, p.Env...)
	if getenv(px.env, "HOME") == "" {
		px.env = append(px.env, "HOME="+homeDir(p.User.UID))
	}
	if cfg.ELFFD <= 0 {
		if len(p.Args) == 0 {
			return nil, fmt.Errorf("process.args is empty: %w", ErrInvalidConfig)
		}
		if px.path, err = lookPath(p.Args[0], px.env, p.Cwd); err != nil {
			return nil, err
		}
	}
	if err := unix.Chdir(p.Cwd); err != nil {
		return nil, fmt.Errorf("chdir to cwd %q set in config.json: %w", p.Cwd, err)
	}
	for _, rl := range p.Rlimits {
		lim := unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}
		if err := unix.Prlimit(0, rlimitTypes[rl.Type], &lim, nil); err != nil {
			return nil, fmt.Errorf("set %s to %d/%d: %w", rl.Type, rl.Soft, rl.Hard, err)
		}
	}
	if io := p.IOPriority; io != nil {
		prio := ioprioClasses[io.Class]<<13 | io.Priority
		if _, _, e := unix.RawSyscall(unix.SYS_IOPRIO_SET, 1 /* IOPRIO_WHO_PROCESS */, 0, uintptr(prio)); e != 0 {
			return nil, fmt.Errorf("set ioPriority: %w", e)
		}
	}
	if s := p.Scheduler; s != nil {
		attr := unix.SchedAttr{
			Size: unix.SizeofSchedAttr, Policy: schedPolicies[s.Policy], Nice: s.Nice, Priority: uint32(s.Priority),
			Runtime: s.Runtime, Deadline: s.Deadline, Period: s.Period,
		}
		for _, f := range s.Flags {
			attr.Flags |= schedFlags[f]
		}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			return nil, fmt.Errorf("set scheduler %s: %w", s.Policy, err)
		}
	}
	if cfg.Spec != nil && cfg.Spec.Linux != nil && cfg.Spec.Linux.Personality != nil {
		var pers uintptr
		switch cfg.Spec.Linux.Personality.Domain {
		case specs.PerLinux:
			pers = 0
		case specs.PerLinux32:
			pers = 0x0008
		default:
			return nil, fmt.Errorf("personality domain %q: %w", cfg.Spec.Linux.Personality.Domain, ErrInvalidConfig)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_PERSONALITY, pers, 0, 0); e != 0 {
			return nil, fmt.Errorf("set personality: %w", e)
		}
	}
	return px, nil
}

func (px *preparedProcess) startHooks(cfg *initConfig) error {
	s := cfg.Spec
	if s.Hooks == nil || len(s.Hooks.StartContainer) == 0 {
		return nil
	}
	st := &specs.State{Version: specs.Version, ID: cfg.ID, Status: specs.StateCreated, Pid: os.Getpid(), Bundle: cfg.Bundle, Annotations: s.Annotations}
	return runHooks(context.Background(), "startContainer", s.Hooks.StartContainer, st)
}

// exec drops to the process's credentials and capabilities, applies
// no_new_privs and seccomp and execs; it returns only on failure. Everything
// runs on the locked main thread, which is the one that execs.
func (px *preparedProcess) exec(report *json.Encoder) error {
	p := px.p
	var seccomp *specs.LinuxSeccomp
	if px.spec != nil && px.spec.Linux != nil {
		seccomp = px.spec.Linux.Seccomp
	}
	last := lastCap()
	for i := 0; i <= last; i++ {
		if px.caps.Bounding&(1<<uint(i)) == 0 {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(i), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("drop %s from bounding set: %w", capNames[i], err)
			}
		}
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	if seccomp != nil && !p.NoNewPrivileges {
		// Without no_new_privs loading a filter needs CAP_SYS_ADMIN, which
		// the process may be about to lose: load it now.
		if err := loadSeccomp(seccomp); err != nil {
			return err
		}
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set keepcaps: %w", err)
	}
	if err := setCreds(p.User); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("clear keepcaps: %w", err)
	}
	if err := capset(px.caps); err != nil {
		return err
	}
	if p.User.Umask != nil {
		unix.Umask(int(*p.User.Umask))
	} else {
		unix.Umask(0o022)
	}
	if seccomp != nil && p.NoNewPrivileges {
		if err := loadSeccomp(seccomp); err != nil {
			return err
		}
	}
	if err := report.Encode(syncMsg{Type: msgExec}); err != nil {
		return fmt.Errorf("report exec: %w", err)
	}
	args := p.Args
	if px.elfFD > 0 {
		if len(args) == 0 {
			args = []string{"init"}
		}
		return execveat(px.elfFD, args, px.env)
	}
	if err := unix.Exec(px.path, args, px.env); err != nil {
		return fmt.Errorf("exec %s: %w", px.path, err)
	}
	return nil
}

func setCreds(u specs.User) error {
	// Always set the supplementary groups, so none of the init's leak in.
	// An empty list may be refused (setgroups "deny" in a user namespace).
	gids := u.AdditionalGids
	var ptr unsafe.Pointer
	if len(gids) > 0 {
		ptr = unsafe.Pointer(&gids[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(ptr), 0); e != 0 && (e != unix.EPERM || len(gids) > 0) {
		return fmt.Errorf("setgroups %v: %w", gids, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", u.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", u.UID, e)
	}
	return nil
}

func capset(c caps) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i, s := range []capSet{c.Effective, c.Permitted, c.Inheritable} {
		lo, hi := uint32(s), uint32(s>>32)
		switch i {
		case 0:
			data[0].Effective, data[1].Effective = lo, hi
		case 1:
			data[0].Permitted, data[1].Permitted = lo, hi
		case 2:
			data[0].Inheritable, data[1].Inheritable = lo, hi
		}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for i := range capNames {
		if c.Ambient&(1<<uint(i)) != 0 {
			if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(i), 0, 0); err != nil {
				return fmt.Errorf("raise ambient %s (it must be permitted and inheritable): %w", capNames[i], err)
			}
		}
	}
	return nil
}

func execveat(fd int, args, env []string) error {
	argv, err := syscall.SlicePtrFromStrings(args)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	empty, _ := unix.BytePtrFromString("")
	_, _, e := unix.RawSyscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(empty)),
		uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return fmt.Errorf("execveat init ELF: %w", e)
}

func getenv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// homeDir looks uid up in the container's /etc/passwd ("/" if absent).
func homeDir(uid uint32) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) >= 6 && parts[2] == strconv.FormatUint(uint64(uid), 10) && parts[5] != "" {
			return parts[5]
		}
	}
	return "/"
}

// lookPath finds file in the container's PATH (from the process env).
func lookPath(file string, env []string, cwd string) (string, error) {
	check := func(p string) error {
		full := p
		if !filepath.IsAbs(full) {
			full = filepath.Join(cwd, full)
		}
		st, err := os.Stat(full)
		if err != nil {
			return err
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return unix.EACCES
		}
		return nil
	}
	if strings.Contains(file, "/") {
		if err := check(file); err != nil {
			return "", fmt.Errorf("exec: %q: %w", file, err)
		}
		return file, nil
	}
	path := getenv(env, "PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if check(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}
