package runtime

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/runtime/internal/nsenter"
)

// ExecOpts configures Exec.
type ExecOpts struct {
	// Process is the process to run (args, env, cwd, user, capabilities,
	// rlimits, noNewPrivileges, terminal...).
	Process *specs.Process
	// ConsoleSocket receives the pty master when Process.Terminal is set.
	ConsoleSocket string
	// Stdin, Stdout, Stderr are the process's stdio without a terminal.
	Stdin, Stdout, Stderr *os.File
	// ExtraFiles are passed to the process as fds 3, 4, ... in addition to
	// stdio (runc's --preserve-fds).
	ExtraFiles []*os.File
	// PidFile receives the process's host pid.
	PidFile string
}

// Process is a process started by Exec.
type Process struct {
	// Pid is the host pid.
	Pid   int
	cmd   *exec.Cmd
	start uint64 // start time of Pid, for waiting on a non-child
}

// Wait waits for the process and returns its exit code (128+signal when
// killed). A process exec'd into a container with its own user or time
// namespace is a grandchild: its status is only available when the caller is
// a child subreaper (PR_SET_CHILD_SUBREAPER, as containerd shims are);
// otherwise Wait waits for its end and returns -1.
func (p *Process) Wait() (int, error) {
	if p.cmd != nil {
		err := p.cmd.Wait()
		return exitCode(p.cmd, err)
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(p.Pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ECHILD) {
			return -1, waitGone(p.Pid, p.start, 0)
		}
		if err != nil {
			return -1, fmt.Errorf("wait for pid %d: %w", p.Pid, err)
		}
		break
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error {
	return unix.Kill(p.Pid, sig)
}

var execNamespaces = []struct {
	name string
	flag int
}{
	{"ipc", unix.CLONE_NEWIPC}, {"uts", unix.CLONE_NEWUTS}, {"net", unix.CLONE_NEWNET},
	{"pid", unix.CLONE_NEWPID}, {"cgroup", unix.CLONE_NEWCGROUP},
}

// Exec runs a new process inside the container: it joins every namespace of
// the init and its cgroup, and gets the process's credentials, capabilities,
// no_new_privs and the container's seccomp profile. Exec returns once the
// process has exec'd.
func (c *Container) Exec(ctx context.Context, opts ExecOpts) (*Process, error) {
	st, err := c.Status()
	if err != nil {
		return nil, err
	}
	switch st {
	case Stopped, Creating:
		return nil, withMessage(ErrNotRunning, "cannot exec in a stopped container")
	case Paused:
		return nil, ErrPaused
	}
	p := opts.Process
	if p == nil || len(p.Args) == 0 {
		return nil, fmt.Errorf("exec needs process args: %w", ErrInvalidConfig)
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	if err := checkProcess(p); err != nil {
		return nil, err
	}
	if p.Terminal && opts.ConsoleSocket == "" {
		return nil, fmt.Errorf("cannot allocate tty if cryo will detach without setting console socket: %w", ErrInvalidConfig)
	}
	pid := c.rec.Pid
	nsPath := func(name string) string { return "/proc/" + strconv.Itoa(pid) + "/ns/" + name }
	differs := map[string]bool{}
	for _, name := range []string{"user", "mnt", "ipc", "uts", "net", "pid", "cgroup", "time"} {
		same, err := sameNamespace(nsPath(name), "/proc/self/ns/"+name)
		if err != nil {
			return nil, err
		}
		differs[name] = !same
	}
	// Verify the init is still the one we recorded now that its namespace
	// paths are resolved.
	if !c.initAlive() {
		return nil, withMessage(ErrNotRunning, "cannot exec in a stopped container")
	}
	// User and time namespaces can only be joined by a single-threaded
	// process: by the exec'd init itself before its Go runtime starts when
	// the cgo constructor of package nsenter is linked in (the process stays
	// our child), otherwise through the nsenter ELF stub (nsenter_linux.go).
	var early []string
	for _, name := range []string{"user", "time"} {
		if differs[name] {
			early = append(early, name)
		}
	}
	if len(early) > 0 && (!nsenter.Available || c.rt.forceNsenterELF) {
		if len(opts.ExtraFiles) > 0 {
			// The stub's fds are fixed (4: this program, 5...: namespaces).
			return nil, fmt.Errorf("extra files for an exec into the user or time namespace of %s without the cgo nsenter constructor: %w", c.rec.ID, ErrNotSupported)
		}
		return c.execViaNsenter(ctx, opts, differs)
	}
	var joins []nsJoin
	for _, ns := range execNamespaces {
		if differs[ns.name] {
			joins = append(joins, nsJoin{name: ns.name, path: nsPath(ns.name), flag: ns.flag})
		}
	}

	cfg := initConfig{Mode: modeExec, ID: c.rec.ID, Bundle: c.rec.Bundle, Rootfs: c.rec.Rootfs, Spec: c.rec.Spec, Process: p, NoNewKeyring: c.rec.NoNewKeyring}
	// The extra files come first (fds 3..3+N-1); the caller keeps them.
	nExtra := len(opts.ExtraFiles)
	files := append([]*os.File{}, opts.ExtraFiles...)
	defer func() {
		for _, f := range files[nExtra:] {
			f.Close()
		}
	}()
	addFile := func(f *os.File) int {
		files = append(files, f)
		return 3 + len(files) - 1
	}
	parentSync, childSync, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer parentSync.Close()
	addFile(childSync)
	mnt, err := os.Open(nsPath("mnt"))
	if err != nil {
		return nil, fmt.Errorf("open mount namespace of %s: %w", c.rec.ID, err)
	}
	cfg.MntNSFD = addFile(mnt)
	if p.Terminal {
		cs, err := dialConsole(opts.ConsoleSocket)
		if err != nil {
			return nil, err
		}
		cfg.ConsoleFD = addFile(cs)
	}
	var setns []string
	for _, name := range early {
		f, err := os.Open(nsPath(name))
		if err != nil {
			return nil, fmt.Errorf("open %s namespace of %s: %w", name, c.rec.ID, err)
		}
		setns = append(setns, strconv.Itoa(addFile(f)))
	}
	cmd := exec.Command(c.rt.InitCommand[0], c.rt.InitCommand[1:]...)
	cmd.Env = initEnvFor(nExtra)
	if len(setns) > 0 {
		cmd.Env = append(cmd.Env, nsenter.Env+"="+strings.Join(setns, ","))
	}
	setStdio(cmd, opts.Stdin, opts.Stdout, opts.Stderr)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: p.Terminal}
	if err := startIn(joins, cmd); err != nil {
		return nil, fmt.Errorf("start exec process: %w", err)
	}
	for _, f := range files[nExtra:] {
		f.Close()
	}
	files = files[:nExtra]
	proc := &Process{Pid: cmd.Process.Pid, cmd: cmd}
	if err := c.finishExec(proc, parentSync, &cfg); err != nil {
		return nil, err
	}
	return c.execDone(proc, opts)
}

// finishExec puts the new process into the cgroup, sends its configuration
// and waits until it has exec'd; on failure the process is killed.
func (c *Container) finishExec(proc *Process, parentSync *os.File, cfg *initConfig) error {
	fail := func(err error) error {
		// How the process ended, if it did by itself (the socket error
		// alone does not say).
		ended := exitedBy(proc.Pid, 100*time.Millisecond)
		_ = unix.Kill(proc.Pid, unix.SIGKILL)
		if code, _ := proc.Wait(); code == nsenter.ExitCode {
			err = fmt.Errorf("%w (the exec process could not join the container's user or time namespace before it started: exit %d, reason on its stderr)", err, code)
		} else if ended != "" {
			err = fmt.Errorf("%w (the exec process %s)", err, ended)
		}
		return err
	}
	cg, err := c.Cgroup()
	if err != nil {
		return fail(err)
	}
	if err := cg.Apply(proc.Pid); err != nil {
		return fail(err)
	}
	if err := setOOMScoreAdj(proc.Pid, cfg.Process.OOMScoreAdj); err != nil {
		return fail(err)
	}
	if err := sendToInit(parentSync, cfg); err != nil {
		return fail(fmt.Errorf("send exec config: %w", err))
	}
	if err := waitExec(json.NewDecoder(parentSync)); err != nil {
		return fail(fmt.Errorf("exec in %s: %w", c.rec.ID, err))
	}
	return nil
}

func (c *Container) execDone(proc *Process, opts ExecOpts) (*Process, error) {
	if opts.PidFile != "" {
		if err := writePidFile(opts.PidFile, proc.Pid); err != nil {
			_ = unix.Kill(proc.Pid, unix.SIGKILL)
			_, _ = proc.Wait()
			return nil, err
		}
	}
	return proc, nil
}

// execViaNsenter runs the exec'd process through the nsenter stub (see
// nsenter_linux.go) because the container has its own user or time
// namespace. The process is then a grandchild: its host pid comes over the
// sync socket as SCM_CREDENTIALS (translated by the kernel), and it is
// reparented to the nearest child subreaper, which should be the caller for
// Process.Wait to get its exit status.
func (c *Container) execViaNsenter(ctx context.Context, opts ExecOpts, differs map[string]bool) (*Process, error) {
	p := opts.Process
	pid := c.rec.Pid
	cfg := initConfig{Mode: modeExec, ID: c.rec.ID, Bundle: c.rec.Bundle, Rootfs: c.rec.Rootfs, Spec: c.rec.Spec, Process: p, NoNewKeyring: c.rec.NoNewKeyring}
	var files []*os.File
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	parentSync, childSync, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer parentSync.Close()
	if err := unix.SetsockoptInt(int(parentSync.Fd()), unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	exe, err := os.Open(c.rt.InitCommand[0])
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", c.rt.InitCommand[0], err)
	}
	files = append(files, childSync, exe) // fds 3, 4
	// The user namespace first: after it, the stub holds every capability
	// over the container's other namespaces.
	// The mount namespace is left to the exec init (MntNSFD): execveat
	// must still find this program's ELF interpreter, if it has one, in
	// the host's mount namespace.
	for _, name := range []string{"user", "ipc", "uts", "net", "pid", "cgroup", "time"} {
		if !differs[name] {
			continue
		}
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/" + name)
		if err != nil {
			return nil, fmt.Errorf("open %s namespace of %s: %w", name, c.rec.ID, err)
		}
		files = append(files, f)
	}
	// A closed fd ends the stub's namespace list; the mount namespace and
	// the console socket come after it.
	files = append(files, nil)
	mnt, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
	if err != nil {
		return nil, fmt.Errorf("open mount namespace of %s: %w", c.rec.ID, err)
	}
	files = append(files, mnt)
	cfg.MntNSFD = 3 + len(files) - 1
	if p.Terminal {
		cs, err := dialConsole(opts.ConsoleSocket)
		if err != nil {
			return nil, err
		}
		files = append(files, cs)
		cfg.ConsoleFD = 3 + len(files) - 1
	}
	stub, err := nsenterMemfd()
	if err != nil {
		return nil, err
	}
	defer stub.Close()
	// Exec the stub by its /proc/self/fd path, from an fd above every fd the
	// child gets, so the dup2s of ExtraFiles cannot overwrite it.
	hi, err := unix.FcntlInt(stub.Fd(), unix.F_DUPFD_CLOEXEC, 3+len(files)+8)
	if err != nil {
		return nil, fmt.Errorf("dup nsenter fd: %w", err)
	}
	defer unix.Close(hi)
	cmd := exec.Command("/proc/self/fd/"+strconv.Itoa(hi), c.rt.InitCommand[1:]...)
	cmd.Args[0] = "cryo-nsenter"
	cmd.Env = []string{initEnv + "=1", initSendPidEnv + "=1"}
	setStdio(cmd, opts.Stdin, opts.Stdout, opts.Stderr)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: p.Terminal}
	if err := cmd.Run(); err != nil {
		if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() > 0 {
			return nil, fmt.Errorf("join namespaces of %s: %w", c.rec.ID, syscall.Errno(cmd.ProcessState.ExitCode()))
		}
		return nil, fmt.Errorf("join namespaces of %s: %w", c.rec.ID, err)
	}
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
	files = nil
	hostPid, err := recvPid(parentSync)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.rec.ID, err)
	}
	proc := &Process{Pid: hostPid}
	if proc.start, err = procStartTime(hostPid); err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.rec.ID, err)
	}
	if err := c.finishExec(proc, parentSync, &cfg); err != nil {
		return nil, err
	}
	return c.execDone(proc, opts)
}

// initSendPidEnv asks the exec init to send its pid as SCM_CREDENTIALS first.
const initSendPidEnv = "_CRYO_SEND_PID"

// recvPid reads the one-byte message carrying the sender's credentials; the
// kernel gives its pid as seen from this process's pid namespace.
func recvPid(f *os.File) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), buf, oob, 0)
	if err != nil {
		return 0, fmt.Errorf("receive pid: %w", err)
	}
	if n == 0 {
		return 0, errInitExited
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return 0, fmt.Errorf("receive pid: no credentials (%v)", err)
	}
	cred, err := unix.ParseUnixCredentials(&msgs[0])
	if err != nil {
		return 0, fmt.Errorf("receive pid: %w", err)
	}
	return int(cred.Pid), nil
}

func sameNamespace(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, fmt.Errorf("stat %s: %w", a, err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, fmt.Errorf("stat %s: %w", b, err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// exitedBy waits up to timeout for the child pid to end, without reaping
// it, and says how it ended ("" if it still runs).
func exitedBy(pid int, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err != nil {
			return ""
		}
		// si_pid, si_uid, si_status follow si_signo, si_errno, si_code and padding.
		raw := (*[128]byte)(unsafe.Pointer(&info))
		if got := int32(binary.LittleEndian.Uint32(raw[16:])); got == int32(pid) {
			status := int32(binary.LittleEndian.Uint32(raw[24:]))
			if info.Code == 1 { // CLD_EXITED
				return fmt.Sprintf("exited with status %d", status)
			}
			return fmt.Sprintf("was killed by signal %d (%v)", status, unix.Signal(status))
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(5 * time.Millisecond)
	}
}
