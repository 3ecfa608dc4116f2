package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

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
	// PidFile receives the process's host pid.
	PidFile string
}

// Process is a process started by Exec.
type Process struct {
	// Pid is the host pid.
	Pid int
	cmd *exec.Cmd
}

// Wait waits for the process (this process is its parent) and returns its
// exit code (128+signal when killed).
func (p *Process) Wait() (int, error) {
	err := waitCmd(p.cmd)
	return exitCode(p.cmd, err)
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
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
	// User and time namespaces are joined by the exec'd init itself, before
	// its Go runtime starts (package nsenter): the kernel only lets a
	// single-threaded process join them.
	var early []string
	for _, name := range []string{"user", "time"} {
		same, err := sameNamespace(nsPath(name), "/proc/self/ns/"+name)
		if err != nil {
			return nil, err
		}
		if !same {
			if !nsenter.Available {
				return nil, fmt.Errorf("exec into a container with its own %s namespace needs cryo built with cgo: %w", name, ErrNotSupported)
			}
			early = append(early, name)
		}
	}
	var joins []nsJoin
	for _, ns := range execNamespaces {
		same, err := sameNamespace(nsPath(ns.name), "/proc/self/ns/"+ns.name)
		if err != nil {
			return nil, err
		}
		if !same {
			joins = append(joins, nsJoin{name: ns.name, path: nsPath(ns.name), flag: ns.flag})
		}
	}
	// Verify the init is still the one we recorded now that its namespace
	// paths are resolved.
	if !c.initAlive() {
		return nil, withMessage(ErrNotRunning, "cannot exec in a stopped container")
	}

	cfg := initConfig{Mode: modeExec, ID: c.rec.ID, Bundle: c.rec.Bundle, Rootfs: c.rec.Rootfs, Spec: c.rec.Spec, Process: p, NoNewKeyring: c.rec.NoNewKeyring}
	var files []*os.File
	defer func() {
		for _, f := range files {
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
	cmd.Env = []string{initEnv + "=1"}
	if len(setns) > 0 {
		cmd.Env = append(cmd.Env, nsenter.Env+"="+strings.Join(setns, ","))
	}
	setStdio(cmd, opts.Stdin, opts.Stdout, opts.Stderr)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: p.Terminal}
	if err := startIn(joins, cmd); err != nil {
		return nil, fmt.Errorf("start exec process: %w", err)
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	fail := func(err error) (*Process, error) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	cg, err := c.Cgroup()
	if err != nil {
		return fail(err)
	}
	if err := cg.Apply(cmd.Process.Pid); err != nil {
		return fail(err)
	}
	if err := setOOMScoreAdj(cmd.Process.Pid, p.OOMScoreAdj); err != nil {
		return fail(err)
	}
	if err := json.NewEncoder(parentSync).Encode(&cfg); err != nil {
		return fail(fmt.Errorf("send exec config: %w", err))
	}
	if err := waitExec(json.NewDecoder(parentSync)); err != nil {
		return fail(fmt.Errorf("exec in %s: %w", c.rec.ID, err))
	}
	if opts.PidFile != "" {
		if err := writePidFile(opts.PidFile, cmd.Process.Pid); err != nil {
			return fail(err)
		}
	}
	return &Process{Pid: cmd.Process.Pid, cmd: cmd}, nil
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
