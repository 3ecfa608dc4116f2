package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/containerd/console"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The container init is this program re-executed as "<argv0> init" with
// _CRYO_INIT set. It gets its instructions over the sync socket (fd 3).
//
// Namespaces: new pid, mount, net, uts, ipc and user namespaces come from the
// clone flags of the re-exec. Namespaces joined by path are entered by the
// parent on a dedicated, locked OS thread just before it forks (setns only
// changes the calling thread, and the fork happens on that thread, so the
// child starts inside them; the thread is discarded afterwards). The mount
// namespace is the exception: setns(CLONE_NEWNS) needs an unshared fs_struct
// and would re-root the parent thread before it resolves the init binary, so
// the child enters it itself on its locked main thread after
// unshare(CLONE_FS). The cgroup and time namespaces are unshared by the child
// once the parent has put it into its cgroup (so the cgroup namespace root is
// the container's cgroup) and, for time, so the offsets can be written before
// any task enters it (execve moves the init into it). User and time
// namespaces cannot be joined by a multi-threaded process (the kernel
// requires a single-threaded caller): the cgo constructor of package
// runtime/internal/nsenter joins those given by path before the Go runtime
// starts; with a user namespace joined, the other joins and the new
// namespaces move there too, after it (earlyjoin_linux.go).
const (
	initEnv = "_CRYO_INIT"
	// initExtraEnv gives the number of caller files (CreateOpts.ExtraFiles,
	// ExecOpts.ExtraFiles) the init holds at fds 3..3+N-1 for the
	// container process: they stay open across its execve, and the sync
	// socket follows them at fd 3+N.
	initExtraEnv = "_CRYO_EXTRA_FDS"
)

// initSyncFD is the init's end of the sync socket: the first fd after the
// extra files.
func initSyncFD() int {
	n, _ := strconv.Atoi(os.Getenv(initExtraEnv))
	return 3 + n
}

// initEnvFor is the environment of an init re-exec with n extra files.
func initEnvFor(n int) []string {
	env := []string{initEnv + "=1"}
	if n > 0 {
		env = append(env, initExtraEnv+"="+strconv.Itoa(n))
	}
	return env
}

func isInit() bool {
	return len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv(initEnv) == "1"
}

func init() {
	if isInit() {
		// Keep the main goroutine on the main thread (the thread group
		// leader): namespaces, credentials and the final execve are per
		// thread, and /proc/self/timens_offsets acts on the leader.
		goruntime.GOMAXPROCS(1)
		goruntime.LockOSThread()
	}
}

// Reexec runs the container init if this process was started as one, and
// then never returns. It returns false otherwise. Call it first in main and
// in TestMain of test packages that create containers.
func Reexec() bool {
	if !isInit() {
		return false
	}
	sync := os.NewFile(uintptr(initSyncFD()), "sync")
	err := runInit(sync)
	// runInit only returns on failure; report it to whoever listens.
	// The parent reports it; the container's stderr is not ours to write.
	_ = json.NewEncoder(sync).Encode(syncMsg{Type: msgError, Error: err.Error()})
	os.Exit(255)
	return true
}

type initMode string

const (
	modeCreate initMode = "create"
	modeExec   initMode = "exec"
)

// initConfig is what the parent sends the init over the sync socket.
type initConfig struct {
	Mode          initMode        `json:"mode"`
	ID            string          `json:"id"`
	Bundle        string          `json:"bundle"`
	Rootfs        string          `json:"rootfs"`
	Spec          *specs.Spec     `json:"spec"`
	Process       *specs.Process  `json:"process"`
	NoPivot       bool            `json:"no_pivot"`
	NoNewKeyring  bool            `json:"no_new_keyring"`
	NewNS         map[string]bool `json:"new_ns"`
	JoinUser      bool            `json:"join_user"` // a user namespace joined by path
	UnshareCgroup bool            `json:"unshare_cgroup"`
	UnshareTime   bool            `json:"unshare_time"`
	ListenerFD    int             `json:"listener_fd"`
	ConsoleFD     int             `json:"console_fd"`
	ELFFD         int             `json:"elf_fd"`
	MntNSFD       int             `json:"mntns_fd"`
}

const (
	msgHooks     = "hooks"      // init -> parent: run createRuntime hooks now
	msgHooksDone = "hooks-done" // parent -> init
	msgReady     = "ready"      // init -> parent: set up, waiting for start
	msgExec      = "exec"       // init -> starter: about to execve
	msgStart     = "start"      // starter -> init
	msgError     = "error"
)

type syncMsg struct {
	Type  string `json:"type"`
	Error string `json:"error,omitempty"`
}

// sendToInit writes one message of the parent to the init: its JSON alone,
// without the newline json.Encoder adds. The init's decoder stops at the
// value's last byte; a newline arriving in a later segment would stay
// unread when the init execs, and a stream socket closed with unread bytes
// resets the connection: the parent would read ECONNRESET where the
// success is EOF.
func sendToInit(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func runInit(sync *os.File) error {
	// Nothing this process inherited may reach the container's process:
	// every fd above stdio and the extra files is closed by the final
	// execve.
	if err := unix.CloseRange(uint(initSyncFD()), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("mark fds close-on-exec: %w", err)
	}
	if os.Getenv(initSendPidEnv) == "1" {
		// Started through the nsenter stub: the parent cannot know this
		// pid; the kernel translates it for the receiver.
		cred := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})
		if err := unix.Sendmsg(initSyncFD(), []byte{0}, cred, nil, 0); err != nil {
			return fmt.Errorf("send pid: %w", err)
		}
	}
	dec := json.NewDecoder(sync)
	enc := json.NewEncoder(sync)
	var cfg initConfig
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("read init config: %w", err)
	}
	for _, fd := range []int{cfg.ListenerFD, cfg.ConsoleFD, cfg.ELFFD, cfg.MntNSFD} {
		if fd > 0 {
			unix.CloseOnExec(fd)
		}
	}
	if cfg.MntNSFD > 0 {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare fs: %w", err)
		}
		if err := unix.Setns(cfg.MntNSFD, unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("join mount namespace: %w", err)
		}
		unix.Close(cfg.MntNSFD)
	}
	if cfg.UnshareCgroup {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("unshare cgroup namespace: %w", err)
		}
	}
	if cfg.UnshareTime {
		if err := unix.Unshare(unix.CLONE_NEWTIME); err != nil {
			return fmt.Errorf("unshare time namespace: %w", err)
		}
		if err := writeTimeOffsets(cfg.Spec.Linux.TimeOffsets); err != nil {
			return err
		}
	}
	p := cfg.Process
	if cfg.Mode == modeCreate {
		s := cfg.Spec
		if cfg.NewNS[string(specs.NetworkNamespace)] {
			if err := loopbackUp(); err != nil {
				return err
			}
		}
		if cfg.NewNS[string(specs.MountNamespace)] {
			if err := prepareRootfs(&cfg); err != nil {
				return err
			}
		}
		if err := enc.Encode(syncMsg{Type: msgHooks}); err != nil {
			return err
		}
		var m syncMsg
		if err := dec.Decode(&m); err != nil {
			return fmt.Errorf("wait for hooks: %w", err)
		}
		if m.Type != msgHooksDone {
			return fmt.Errorf("unexpected sync message %q", m.Type)
		}
		if s.Hooks != nil && len(s.Hooks.CreateContainer) > 0 {
			st := &specs.State{Version: specs.Version, ID: cfg.ID, Status: specs.StateCreating, Pid: os.Getpid(), Bundle: cfg.Bundle, Annotations: s.Annotations}
			if err := runHooks(context.Background(), "createContainer", s.Hooks.CreateContainer, st); err != nil {
				return err
			}
		}
		if cfg.NewNS[string(specs.MountNamespace)] {
			var err error
			if cfg.NoPivot {
				err = moveRoot(cfg.Rootfs)
			} else {
				err = pivotRoot(cfg.Rootfs)
			}
			if err != nil {
				return err
			}
		}
		if p != nil && p.Terminal {
			if err := setupConsole(cfg.ConsoleFD, p.ConsoleSize); err != nil {
				return err
			}
		}
		if s.Hostname != "" {
			if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
				return fmt.Errorf("set hostname: %w", err)
			}
		}
		if s.Domainname != "" {
			if err := unix.Setdomainname([]byte(s.Domainname)); err != nil {
				return fmt.Errorf("set domainname: %w", err)
			}
		}
		for k, v := range s.Linux.Sysctl {
			if err := writeSysctl(k, v); err != nil {
				return err
			}
		}
		if cfg.NewNS[string(specs.MountNamespace)] {
			if err := finishRootfs(s); err != nil {
				return err
			}
		}
	} else if p.Terminal {
		if err := setupConsole(cfg.ConsoleFD, p.ConsoleSize); err != nil {
			return err
		}
	}
	if !cfg.NoNewKeyring {
		if _, err := unix.KeyctlJoinSessionKeyring("_ses." + cfg.ID); err != nil && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("join session keyring: %w", err)
		}
	}
	px, err := prepareProcess(&cfg)
	if err != nil {
		return err
	}
	// From here on, reports go to whoever starts the process: the parent for
	// exec and restore, the `start` caller for a created container.
	report := enc
	if cfg.Mode == modeCreate {
		if err := enc.Encode(syncMsg{Type: msgReady}); err != nil {
			return err
		}
		if cfg.ListenerFD > 0 {
			conn, err := waitStart(cfg.ListenerFD)
			if err != nil {
				return err
			}
			report = json.NewEncoder(conn)
			if err := px.startHooks(&cfg); err != nil {
				return reportErr(report, err)
			}
		}
	}
	return reportErr(report, px.exec(report))
}

func reportErr(enc *json.Encoder, err error) error {
	if err != nil {
		_ = enc.Encode(syncMsg{Type: msgError, Error: err.Error()})
		fmt.Fprintf(os.Stderr, "cryo init: %v\n", err)
		os.Exit(255)
	}
	return nil
}

// waitStart accepts the `start` connection and reads its request.
func waitStart(lfd int) (*os.File, error) {
	for {
		nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("wait for start: %w", err)
		}
		conn := os.NewFile(uintptr(nfd), "start")
		var m syncMsg
		if err := json.NewDecoder(conn).Decode(&m); err != nil || m.Type != msgStart {
			conn.Close()
			continue
		}
		unix.Close(lfd)
		return conn, nil
	}
}

func writeTimeOffsets(offs map[string]specs.LinuxTimeOffset) error {
	var b strings.Builder
	for clock, o := range offs {
		fmt.Fprintf(&b, "%s %d %d\n", clock, o.Secs, o.Nanosecs)
	}
	if b.Len() == 0 {
		return nil
	}
	f, err := os.OpenFile("/proc/self/timens_offsets", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open timens_offsets: %w", err)
	}
	defer f.Close()
	if _, err := f.Write([]byte(b.String())); err != nil {
		return fmt.Errorf("write timens_offsets: %w", err)
	}
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

func writeSysctl(key, val string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
	}
	return nil
}

// setupConsole creates the container's pty inside its /dev, sends the master
// to the console socket (SCM_RIGHTS, with the slave's name as payload) and
// makes the slave the controlling terminal and stdio.
func setupConsole(sockFD int, size *specs.Box) error {
	if sockFD <= 0 {
		return fmt.Errorf("terminal requested without a console socket: %w", ErrInvalidConfig)
	}
	// An init forked by the nsenter constructor is not the session leader
	// its parent was made: only a session leader may take a controlling
	// terminal.
	if sid, err := unix.Getsid(0); err == nil && sid != os.Getpid() {
		if _, err := unix.Setsid(); err != nil {
			return fmt.Errorf("setsid: %w", err)
		}
	}
	pty, slaveName, err := console.NewPty()
	if err != nil {
		return fmt.Errorf("create pty: %w", err)
	}
	defer pty.Close()
	if size != nil {
		if err := pty.Resize(console.WinSize{Height: uint16(size.Height), Width: uint16(size.Width)}); err != nil {
			return fmt.Errorf("resize pty: %w", err)
		}
	}
	if err := unix.Sendmsg(sockFD, []byte(slaveName), unix.UnixRights(int(pty.Fd())), nil, 0); err != nil {
		return fmt.Errorf("send pty master: %w", err)
	}
	unix.Close(sockFD)
	slave, err := unix.Open(slaveName, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open pty slave %s: %w", slaveName, err)
	}
	if err := unix.IoctlSetInt(slave, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("set controlling terminal: %w", err)
	}
	for i := 0; i < 3; i++ {
		if err := unix.Dup3(slave, i, 0); err != nil {
			return fmt.Errorf("dup pty to fd %d: %w", i, err)
		}
	}
	return unix.Close(slave)
}

// procStartTime reads the start time (clock ticks since boot) of pid, used
// to tell a pid from a recycled one.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, unix.ESRCH
	}
	return strconv.ParseUint(f[19], 10, 64)
}
