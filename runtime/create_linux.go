package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine"
	"github.com/cryo-run/cryo/oci"
	"github.com/cryo-run/cryo/runtime/cgroups"
)

// CreateOpts configures Create.
type CreateOpts struct {
	// Bundle is the bundle directory (default: the working directory).
	Bundle string
	// Spec, if set, is used instead of <Bundle>/config.json.
	Spec *specs.Spec
	// PidFile receives the init's host pid once the container is created.
	PidFile string
	// ConsoleSocket is an AF_UNIX socket path that receives the pty master
	// (SCM_RIGHTS) when process.terminal is true.
	ConsoleSocket string
	// Stdin, Stdout and Stderr become the init's stdio when there is no
	// terminal (nil: /dev/null).
	Stdin, Stdout, Stderr *os.File
	// ExtraFiles are passed to the container process as fds 3, 4, ... in
	// addition to stdio (runc's --preserve-fds; no LISTEN_FDS is set).
	ExtraFiles []*os.File
	// NoPivot uses MS_MOVE + chroot instead of pivot_root.
	NoPivot bool
	// NoNewKeyring keeps the caller's session keyring.
	NoNewKeyring bool
	// InitELF, if set, is executed (from a memfd, execveat AT_EMPTY_PATH) as
	// the container's init instead of process.args, right after the
	// namespaces, rootfs and cgroup are set up; Create then returns a running
	// container whose Pid is that process. This is the restore path: the
	// engine's stub is started this way and rebuilt from outside.
	InitELF []byte
	// InitArgs is the argv of InitELF (default: process.args, else ["init"]).
	InitArgs []string
}

// nsJoin is a namespace entered by setns before the init is forked.
type nsJoin struct {
	name string
	path string
	flag int
}

var nsCloneFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.PIDNamespace: unix.CLONE_NEWPID, specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.MountNamespace: unix.CLONE_NEWNS, specs.IPCNamespace: unix.CLONE_NEWIPC,
	specs.UTSNamespace: unix.CLONE_NEWUTS, specs.UserNamespace: unix.CLONE_NEWUSER,
	specs.CgroupNamespace: unix.CLONE_NEWCGROUP, specs.TimeNamespace: unix.CLONE_NEWTIME,
}

// Create sets up a container from a bundle: namespaces, cgroup, rootfs and
// createRuntime/createContainer hooks. The init then waits for Start (or, with
// InitELF, execs the ELF at once). On any error everything created so far
// (process, cgroup, state dir) is removed again.
func (r *Runtime) Create(ctx context.Context, id string, opts CreateOpts) (_ *Container, retErr error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	bundle := opts.Bundle
	if bundle == "" {
		bundle = "."
	}
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return nil, err
	}
	spec := opts.Spec
	if spec == nil {
		if spec, err = oci.LoadSpec(bundle); err != nil {
			return nil, err
		}
	} else {
		if err := oci.ValidateSpec(spec); err != nil {
			return nil, err
		}
		if !filepath.IsAbs(spec.Root.Path) {
			spec.Root.Path = filepath.Join(bundle, spec.Root.Path)
		}
	}
	if spec.Linux == nil {
		return nil, fmt.Errorf("config has no linux section: %w", ErrInvalidConfig)
	}
	proc := spec.Process
	if proc == nil {
		if opts.InitELF == nil {
			return nil, fmt.Errorf("config has no process: %w", ErrInvalidConfig)
		}
		proc = &specs.Process{Cwd: "/"}
	}
	if err := checkProcess(proc); err != nil {
		return nil, err
	}
	if proc.Terminal && opts.ConsoleSocket == "" {
		return nil, fmt.Errorf("cannot allocate tty if cryo will detach without setting console socket: %w", ErrInvalidConfig)
	}
	if !proc.Terminal && opts.ConsoleSocket != "" {
		return nil, fmt.Errorf("cannot use console socket if cryo will not detach or allocate tty: %w", ErrInvalidConfig)
	}
	if spec.Linux.Seccomp != nil {
		if err := checkSeccomp(spec.Linux.Seccomp); err != nil {
			return nil, err
		}
	}
	if spec.Linux.IntelRdt != nil {
		return nil, fmt.Errorf("intelRdt: %w", ErrNotSupported)
	}
	if spec.Linux.MemoryPolicy != nil {
		return nil, fmt.Errorf("memoryPolicy: %w", ErrNotSupported)
	}
	if len(spec.Linux.NetDevices) > 0 {
		return nil, fmt.Errorf("netDevices: %w", ErrNotSupported)
	}

	cfg := initConfig{
		Mode: modeCreate, ID: id, Bundle: bundle, Rootfs: spec.Root.Path, Spec: spec, Process: proc,
		NoPivot: opts.NoPivot, NoNewKeyring: opts.NoNewKeyring, NewNS: map[string]bool{},
	}
	var cloneFlags uintptr
	var joins []nsJoin
	var userPath, timePath string
	var mntns *os.File
	defer func() {
		if mntns != nil {
			mntns.Close()
		}
	}()
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path == "" {
			cfg.NewNS[string(ns.Type)] = true
			switch ns.Type {
			case specs.CgroupNamespace:
				cfg.UnshareCgroup = true
			case specs.TimeNamespace:
				cfg.UnshareTime = true
			default:
				cloneFlags |= nsCloneFlags[ns.Type]
			}
			continue
		}
		switch ns.Type {
		case specs.UserNamespace, specs.TimeNamespace:
			// Joining the namespace this process is in already changes
			// nothing (and setns refuses to re-enter one's own user
			// namespace).
			same, err := sameNamespace(ns.Path, "/proc/self/ns/"+string(ns.Type))
			if err != nil {
				return nil, fmt.Errorf("%s namespace: %w", ns.Type, err)
			}
			if same {
				continue
			}
			if ns.Type == specs.UserNamespace {
				userPath = ns.Path
			} else {
				timePath = ns.Path
			}
		case specs.MountNamespace:
			if mntns, err = os.Open(ns.Path); err != nil {
				return nil, fmt.Errorf("open mount namespace: %w", err)
			}
		default:
			joins = append(joins, nsJoin{name: string(ns.Type), path: ns.Path, flag: int(nsCloneFlags[ns.Type])})
		}
	}
	if !cfg.NewNS[string(specs.MountNamespace)] && mntns == nil {
		return nil, fmt.Errorf("a container without its own mount namespace: %w", ErrNotSupported)
	}
	early, err := planEarlyJoins(spec.Linux, cfg.NewNS, userPath, timePath, &cloneFlags, &joins)
	if err != nil {
		return nil, err
	}
	cfg.JoinUser = userPath != ""
	var sysattr syscall.SysProcAttr
	sysattr.Cloneflags = cloneFlags
	sysattr.Setsid = proc.Terminal
	if cfg.NewNS[string(specs.UserNamespace)] {
		if len(spec.Linux.UIDMappings) == 0 || len(spec.Linux.GIDMappings) == 0 {
			return nil, fmt.Errorf("a new user namespace needs uidMappings and gidMappings: %w", ErrInvalidConfig)
		}
		for _, m := range spec.Linux.UIDMappings {
			sysattr.UidMappings = append(sysattr.UidMappings, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
		}
		for _, m := range spec.Linux.GIDMappings {
			sysattr.GidMappings = append(sysattr.GidMappings, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
		}
		sysattr.GidMappingsEnableSetgroups = true
		// The init must be root inside the new user namespace, or execve
		// drops every capability it needs to set the container up.
		if !mapsZero(spec.Linux.UIDMappings) || !mapsZero(spec.Linux.GIDMappings) {
			return nil, fmt.Errorf("a new user namespace must map container uid and gid 0: %w", ErrInvalidConfig)
		}
		sysattr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}

	dir := filepath.Join(r.root, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("container %s: %w", id, ErrExist)
		}
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	c := &Container{rt: r, dir: dir, rec: record{
		ID: id, Bundle: bundle, Rootfs: spec.Root.Path, Status: Creating, Created: time.Now().UTC(),
		CgroupPath: spec.Linux.CgroupsPath, NoPivot: opts.NoPivot, NoNewKeyring: opts.NoNewKeyring, Spec: spec,
	}}
	if c.rec.CgroupPath == "" {
		c.rec.CgroupPath = cgroups.DefaultPath(id)
	}
	var cmd *exec.Cmd
	var cg cgroups.Manager
	grandchild := 0 // an init that is not our child (see planEarlyJoins)
	defer func() {
		if retErr == nil {
			return
		}
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
		if grandchild != 0 {
			_ = unix.Kill(grandchild, unix.SIGKILL)
			_ = waitGone(grandchild, 0, 5*time.Second)
		}
		if cg != nil {
			if err := cg.Delete(); err != nil {
				log.G(ctx).WithError(err).WithField("id", id).Warn("remove cgroup of failed create")
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("remove state dir of failed create")
		}
	}()
	if err := c.save(); err != nil {
		return nil, err
	}

	// The extra files come first (fds 3..3+N-1 of the init, kept open
	// across its execve); the caller keeps its own copies.
	files := append([]*os.File{}, opts.ExtraFiles...)
	defer func() {
		for _, f := range files[len(opts.ExtraFiles):] {
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
	if opts.InitELF == nil {
		l, err := listenInit(dir)
		if err != nil {
			return nil, err
		}
		cfg.ListenerFD = addFile(l)
	} else {
		mfd, err := unix.MemfdCreate("cryo-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			return nil, fmt.Errorf("memfd for init ELF: %w", err)
		}
		mf := os.NewFile(uintptr(mfd), "init-elf")
		if _, err := mf.Write(opts.InitELF); err != nil {
			mf.Close()
			return nil, fmt.Errorf("write init ELF: %w", err)
		}
		_, _ = unix.FcntlInt(mf.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE)
		cfg.ELFFD = addFile(mf)
		p := *proc
		p.Args = opts.InitArgs
		if len(p.Args) == 0 {
			p.Args = proc.Args
		}
		p.Terminal = false
		// The ELF is the engine's restore stub: it is rebuilt from outside by
		// injected system calls (clone3 with set_tid, PR_SET_MM_MAP, setresuid,
		// capset...) and the engine sets the saved credentials, capabilities,
		// no_new_privs and seccomp filter last. So it starts as root with every
		// capability and no filter; the container's own settings still come
		// from the checkpoint, never from this.
		p.User = specs.User{UID: 0, GID: 0}
		all := allCapNames()
		p.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
		p.NoNewPrivileges = false
		p.ApparmorProfile, p.SelinuxLabel = "", ""
		linux := *spec.Linux
		linux.Seccomp = nil
		stubSpec := *spec
		stubSpec.Linux = &linux
		cfg.Spec = &stubSpec
		cfg.Process = &p
	}
	if proc.Terminal {
		cs, err := dialConsole(opts.ConsoleSocket)
		if err != nil {
			return nil, err
		}
		cfg.ConsoleFD = addFile(cs)
	}
	if mntns != nil {
		cfg.MntNSFD = addFile(mntns)
		mntns = nil
	}

	cmd = exec.Command(r.InitCommand[0], r.InitCommand[1:]...)
	cmd.Env = initEnvFor(len(opts.ExtraFiles))
	if len(early.paths) > 0 {
		env, err := early.env(addFile)
		if err != nil {
			return nil, err
		}
		cmd.Env = append(cmd.Env, env...)
		if early.fork {
			if err := unix.SetsockoptInt(int(parentSync.Fd()), unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
				return nil, fmt.Errorf("sync socket: %w", err)
			}
		}
	}
	setStdio(cmd, opts.Stdin, opts.Stdout, opts.Stderr)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &sysattr
	if err := startIn(joins, cmd); err != nil {
		cmd = nil
		return nil, fmt.Errorf("start container init: %w", err)
	}
	for _, f := range files[len(opts.ExtraFiles):] {
		f.Close()
	}
	files = files[:len(opts.ExtraFiles)]
	pid := cmd.Process.Pid
	if early.fork {
		// The init is the constructor's child, inside the pid namespace;
		// ours exits at once. The init sends its pid first.
		werr := cmd.Wait()
		cmd = nil
		if werr != nil {
			return nil, fmt.Errorf("join namespaces of the container init: %w", werr)
		}
		if pid, err = recvPid(parentSync); err != nil {
			return nil, fmt.Errorf("container init: %w", err)
		}
		grandchild = pid
	}
	if userPath != "" {
		if err := checkJoinedMaps(pid, spec.Linux); err != nil {
			return nil, err
		}
	}

	if cg, err = cgroups.New(c.rec.CgroupPath, withDefaultDevices(spec.Linux)); err != nil {
		return nil, fmt.Errorf("cgroup of %s: %w", id, err)
	}
	c.rec.CgroupPath = cg.Path()
	if err := cg.Apply(pid); err != nil {
		return nil, err
	}
	if err := setOOMScoreAdj(pid, proc.OOMScoreAdj); err != nil {
		return nil, err
	}
	c.rec.Pid = pid
	if c.rec.PidStartTime, err = procStartTime(pid); err != nil {
		return nil, fmt.Errorf("read init start time: %w", err)
	}

	dec := json.NewDecoder(parentSync)
	if err := sendToInit(parentSync, &cfg); err != nil {
		return nil, fmt.Errorf("send init config: %w", err)
	}
	hookState := func(s specs.ContainerState) *specs.State {
		return &specs.State{Version: specs.Version, ID: id, Status: s, Pid: pid, Bundle: bundle, Annotations: spec.Annotations}
	}
	for ready := false; !ready; {
		var m syncMsg
		if err := dec.Decode(&m); err != nil {
			return nil, initFailure(cmd, err)
		}
		switch m.Type {
		case msgHooks:
			if spec.Hooks != nil {
				if err := runHooks(ctx, "prestart", spec.Hooks.Prestart, hookState(specs.StateCreating)); err != nil { //nolint:staticcheck // legacy hook still honoured
					return nil, err
				}
				if err := runHooks(ctx, "createRuntime", spec.Hooks.CreateRuntime, hookState(specs.StateCreating)); err != nil {
					return nil, err
				}
			}
			if err := sendToInit(parentSync, syncMsg{Type: msgHooksDone}); err != nil {
				return nil, fmt.Errorf("resume init after hooks: %w", err)
			}
		case msgReady:
			ready = true
		case msgError:
			return nil, fmt.Errorf("container init: %s", m.Error)
		default:
			return nil, fmt.Errorf("container init sent unexpected %q", m.Type)
		}
	}
	c.rec.Status = Created
	if opts.InitELF != nil {
		if err := waitExec(dec); err != nil {
			return nil, err
		}
		c.rec.Status = Running
	}
	c.rec.Stdio = stdioIDs(pid)
	if err := c.save(); err != nil {
		return nil, err
	}
	if opts.PidFile != "" {
		if err := writePidFile(opts.PidFile, pid); err != nil {
			return nil, err
		}
	}
	c.cmd = cmd // nil when the init is not our child
	c.cg = cg
	return c, nil
}

// stdioIDs names the files of the init's fds 0-2 once it is set up: the
// container's stdio, which a checkpoint treats as external (reconnected at
// restore) wherever the tree holds them, whatever fds they are at by then.
func stdioIDs(pid int) [3]engine.FileID {
	var ids [3]engine.FileID
	for i := range ids {
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, i), &st); err == nil {
			ids[i] = engine.FileID{Dev: st.Dev, Ino: st.Ino}
		}
	}
	return ids
}

// withDefaultDevices returns the resources with the device rules extended so
// that the devices the runtime supplies (the spec's default devices, the pty
// devices and every linux.devices entry) stay usable, as runc does: a spec
// that denies all devices still gets /dev/null.
func withDefaultDevices(l *specs.Linux) *specs.LinuxResources {
	var r specs.LinuxResources
	if l.Resources != nil {
		r = *l.Resources
	}
	r.Devices = append([]specs.LinuxDeviceCgroup{}, r.Devices...)
	i64 := func(v int64) *int64 { return &v }
	allow := func(typ string, major, minor *int64) {
		r.Devices = append(r.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: major, Minor: minor, Access: "rwm"})
	}
	for _, d := range defaultDevices {
		allow("c", i64(d.Major), i64(d.Minor))
	}
	allow("c", i64(5), i64(2)) // /dev/ptmx
	allow("c", i64(136), nil)  // /dev/pts/*
	allow("c", i64(5), i64(1)) // /dev/console
	for _, d := range l.Devices {
		typ := d.Type
		if typ == "u" {
			typ = "c"
		}
		if typ == "p" {
			continue
		}
		allow(typ, i64(d.Major), i64(d.Minor))
	}
	return &r
}

func mapsZero(ms []specs.LinuxIDMapping) bool {
	for _, m := range ms {
		if m.ContainerID == 0 && m.Size > 0 {
			return true
		}
	}
	return false
}

// waitExec reads the init's last reports: "exec" then EOF (the sync socket is
// close-on-exec) means the execve succeeded.
func waitExec(dec *json.Decoder) error {
	execed := false
	for {
		var m syncMsg
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			if !execed {
				return errInitExited
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read init report: %w", err)
		}
		switch m.Type {
		case msgExec:
			execed = true
		case msgError:
			return fmt.Errorf("container init: %s", m.Error)
		}
	}
}

func initFailure(cmd *exec.Cmd, err error) error {
	if errors.Is(err, io.EOF) {
		return errInitExited
	}
	return fmt.Errorf("read from container init: %w", err)
}

// setStdio passes the files themselves (a nil *os.File must not become a
// non-nil io.Reader, which exec.Cmd would copy from).
func setStdio(cmd *exec.Cmd, in, out, errf *os.File) {
	if in != nil {
		cmd.Stdin = in
	}
	if out != nil {
		cmd.Stdout = out
	}
	if errf != nil {
		cmd.Stderr = errf
	}
}

func socketPair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child"), nil
}

const initSocket = "init.sock"

// sockPath names dir/name for bind/connect, going through /proc/self/fd when
// the path would not fit a sockaddr_un.
func sockPath(dir, name string, use func(path string) error) error {
	p := filepath.Join(dir, name)
	if len(p) < 100 {
		return use(p)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return use("/proc/self/fd/" + strconv.Itoa(int(d.Fd())) + "/" + name)
}

// listenInit creates the socket on which the created init waits for start.
func listenInit(dir string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start socket: %w", err)
	}
	err = sockPath(dir, initSocket, func(p string) error {
		return unix.Bind(fd, &unix.SockaddrUnix{Name: p})
	})
	if err == nil {
		err = unix.Listen(fd, 4)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("start socket in %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), "init-listener"), nil
}

func dialInit(dir string) (net.Conn, error) {
	var conn net.Conn
	err := sockPath(dir, initSocket, func(p string) error {
		var err error
		conn, err = net.Dial("unix", p)
		return err
	})
	return conn, err
}

func dialConsole(path string) (*os.File, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to console socket %s: %w", path, err)
	}
	defer conn.Close()
	f, err := conn.(*net.UnixConn).File()
	if err != nil {
		return nil, fmt.Errorf("console socket fd: %w", err)
	}
	return f, nil
}

// startIn starts cmd inside the given namespaces. setns changes only the
// calling thread and fork happens on the calling thread, so a goroutine locks
// its thread, enters the namespaces, forks, and then moves the thread back
// into its original namespaces before unlocking it (a thread left in a
// container namespace would pin that namespace; if going back fails the
// thread stays locked and the Go runtime terminates it with the goroutine).
func startIn(joins []nsJoin, cmd *exec.Cmd) error {
	if len(joins) == 0 {
		return cmd.Start()
	}
	ch := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		var restore []func() error
		var origs []*os.File
		// The thread goes back to its namespaces before their fds are
		// closed. A thread that cannot go back stays locked and dies with
		// the goroutine -- unless it is the main thread, which Go keeps
		// (wedged): then /proc/self/ns/* would name the container's
		// namespaces, and Exec would think it is already in them.
		back := func() {
			for i := len(restore) - 1; i >= 0; i-- {
				if err := restore[i](); err != nil {
					return // keep the thread locked: it dies with the goroutine
				}
			}
			goruntime.UnlockOSThread()
		}
		defer func() {
			back()
			for _, f := range origs {
				f.Close()
			}
		}()
		for _, j := range joins {
			orig, err := os.Open("/proc/thread-self/ns/" + procNSName(j.name))
			if err != nil {
				ch <- fmt.Errorf("open own %s namespace: %w", j.name, err)
				return
			}
			origs = append(origs, orig)
			flag := j.flag
			restore = append(restore, func() error { return unix.Setns(int(orig.Fd()), flag) })
			f, err := os.Open(j.path)
			if err != nil {
				ch <- fmt.Errorf("open %s namespace: %w", j.name, err)
				return
			}
			err = unix.Setns(int(f.Fd()), j.flag)
			f.Close()
			if err != nil {
				ch <- fmt.Errorf("join %s namespace %s: %w", j.name, j.path, err)
				return
			}
		}
		ch <- cmd.Start()
	}()
	return <-ch
}

// procNSName maps an OCI namespace type to its /proc/<pid>/ns entry.
func procNSName(t string) string {
	switch t {
	case "network":
		return "net"
	case "mount":
		return "mnt"
	case "pid":
		return "pid_for_children"
	}
	return t
}

func setOOMScoreAdj(pid int, adj *int) error {
	if adj == nil {
		return nil
	}
	err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte(strconv.Itoa(*adj)), 0o644)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("set oomScoreAdj to %d: lowering it needs CAP_SYS_RESOURCE, which this runtime does not have: %w", *adj, err)
		}
		return fmt.Errorf("set oomScoreAdj to %d: %w", *adj, err)
	}
	return nil
}

func writePidFile(path string, pid int) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

// allCapNames lists every capability in this process's bounding set: the
// most a restore stub may start with (never more than the caller has).
func allCapNames() []string {
	var out []string
	for i := 0; i <= lastCap() && i < len(capNames); i++ {
		if ok, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(i), 0, 0, 0); err == nil && ok == 1 {
			out = append(out, capNames[i])
		}
	}
	return out
}
