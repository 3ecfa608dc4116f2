package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// maxSocketDir is containerd's limit on the shim socket directory: the socket name appended to
// it (a sha256 hex) must still fit in sun_path.
const maxSocketDir = 42

// Daemon is a private containerd: its own root, state, sockets, shim socket dir, opt dir and
// XDG_RUNTIME_DIR, all under Dir; no CRI and no NRI. Its containers live in Namespace, which is
// unique per daemon so that the default cgroup paths (/<namespace>/<id>) never collide with
// another daemon's, and Close can find every process it caused by cgroup.
type Daemon struct {
	Dir         string
	Address     string // grpc socket; ttrpc is Address+".ttrpc"
	Namespace   string
	Snapshotter string // overlayfs, or native when overlayfs is not usable

	bins    *Binaries
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
	starts  int
}

// NewDaemon prepares (but does not start) a daemon whose files live in a fresh directory
// /tmp/cryo-it-<name>-*. name should be short: the shim socket dir must stay within 42 characters.
func NewDaemon(bins *Binaries, name string) (*Daemon, error) {
	if len(name) > 8 {
		name = name[:8]
	}
	dir, err := os.MkdirTemp("/tmp", "cryo-it-"+name+"-")
	if err != nil {
		return nil, err
	}
	if n := len(filepath.Join(dir, "s")); n > maxSocketDir {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("socket dir %s is %d characters, containerd allows %d", filepath.Join(dir, "s"), n, maxSocketDir)
	}
	for _, sub := range []string{"root", "state", "run", "s", "opt", "xdg", "fifo", "runc", "nerdctl", "cni/net.d", "cni/bin"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o711); err != nil {
			return nil, err
		}
	}
	d := &Daemon{
		Dir:         dir,
		Address:     filepath.Join(dir, "run", "containerd.sock"),
		Namespace:   "cryoit-" + filepath.Base(dir)[len("cryo-it-"):],
		Snapshotter: "overlayfs",
		bins:        bins,
		logPath:     filepath.Join(dir, "containerd.log"),
	}
	d.Namespace = strings.NewReplacer("-", "").Replace(d.Namespace)
	config := fmt.Sprintf(`# written by cryo's integration harness; nothing outside %[1]s
version = 4
root = "%[1]s/root"
state = "%[1]s/state"
imports = []
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox",
  "io.containerd.nri.v1.nri",
]
[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "%[1]s/s"
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		return nil, err
	}
	return d, nil
}

// Bins returns the binaries this daemon runs with.
func (d *Daemon) Bins() *Binaries { return d.bins }

// FifoDir is where tests put the stdio FIFOs of ctr (ctr run/exec --fifo-dir).
func (d *Daemon) FifoDir() string { return filepath.Join(d.Dir, "fifo") }

// RuncRoot is the runc state root the tests pass to the runc shim (ctr run --runc-root).
func (d *Daemon) RuncRoot() string { return filepath.Join(d.Dir, "runc") }

// LogPath is containerd's log (debug level, shim logs included).
func (d *Daemon) LogPath() string { return d.logPath }

// Env is the environment of the daemon and of the clients the tests run.
func (d *Daemon) Env() []string {
	path := strings.Join(append(append([]string{}, d.bins.PathDirs...), os.Getenv("PATH")), ":")
	env := []string{"PATH=" + path, "XDG_RUNTIME_DIR=" + filepath.Join(d.Dir, "xdg"), "CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "XDG_RUNTIME_DIR", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Start starts containerd (again, after Stop, with the same root and state) and waits until it
// answers on its socket.
func (d *Daemon) Start(ctx context.Context) error {
	if d.cmd != nil {
		return errors.New("daemon already running")
	}
	logf, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	d.starts++
	fmt.Fprintf(logf, "---- start #%d at %s\n", d.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(d.bins.Containerd, "--config", filepath.Join(d.Dir, "config.toml"),
		"--address", d.Address, "--log-level", "debug")
	cmd.Env = d.Env()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a ^C to `go test` must not kill the daemon before Close runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start containerd: %w", err)
	}
	logf.Close()
	d.cmd = cmd
	d.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(d.done)

	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(d.Address); err == nil {
			if _, err := d.Ctr(ctx, "version"); err == nil {
				break
			}
		}
		select {
		case <-d.done:
			d.cmd = nil
			return fmt.Errorf("containerd exited during startup:\n%s", d.LogTail(30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not ready after 30s:\n%s", d.LogTail(30))
		}
	}
	if d.starts == 1 {
		out, err := d.Ctr(ctx, "plugins", "ls")
		if err != nil {
			return err
		}
		if !pluginOK(out, "io.containerd.snapshotter.v1", "overlayfs") {
			d.Snapshotter = "native"
		}
	}
	return nil
}

func pluginOK(list, typ, id string) bool {
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == typ && f[1] == id && f[len(f)-1] == "ok" {
			return true
		}
	}
	return false
}

// Pid is containerd's PID, or 0 when it is not running.
func (d *Daemon) Pid() int {
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Stop stops containerd: SIGTERM, then SIGKILL after 10 s. Shims and containers keep running,
// as they do when a real containerd restarts.
func (d *Daemon) Stop() error {
	if d.cmd == nil {
		return nil
	}
	defer func() { d.cmd = nil }()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	d.cmd.Process.Kill()
	<-d.done
	return fmt.Errorf("containerd pid %d ignored SIGTERM for 10s, killed", d.cmd.Process.Pid)
}

// Restart stops containerd and starts it again with the same root and state.
func (d *Daemon) Restart(ctx context.Context) error {
	if err := d.Stop(); err != nil {
		return err
	}
	return d.Start(ctx)
}

// Ctr runs ctr against this daemon in its namespace and returns stdout; the error carries stderr.
func (d *Daemon) Ctr(ctx context.Context, args ...string) (string, error) {
	return d.run(ctx, d.CtrCmd(ctx, args...))
}

// CtrCmd returns the ctr command (not started) for callers that need its stdio.
func (d *Daemon) CtrCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.bins.Ctr, append([]string{"-a", d.Address, "-n", d.Namespace}, args...)...)
	cmd.Env = d.Env()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Nerdctl runs nerdctl against this daemon (same namespace, private data root and CNI dirs).
func (d *Daemon) Nerdctl(ctx context.Context, args ...string) (string, error) {
	return d.run(ctx, d.NerdctlCmd(ctx, args...))
}

// NerdctlCmd returns the nerdctl command (not started).
func (d *Daemon) NerdctlCmd(ctx context.Context, args ...string) *exec.Cmd {
	global := []string{"--address", d.Address, "--namespace", d.Namespace, "--snapshotter", d.Snapshotter,
		"--data-root", filepath.Join(d.Dir, "nerdctl"), "--cni-netconfpath", filepath.Join(d.Dir, "cni/net.d"),
		"--cni-path", filepath.Join(d.Dir, "cni/bin"), "--cgroup-manager", "cgroupfs"}
	cmd := exec.CommandContext(ctx, d.bins.Nerdctl, append(global, args...)...)
	cmd.Env = d.Env()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (d *Daemon) run(ctx context.Context, cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(cmd.Path), strings.Join(cmd.Args[1:], " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Import imports an OCI image-layout tar with ctr into the daemon's snapshotter.
func (d *Daemon) Import(ctx context.Context, tarPath string) error {
	_, err := d.Ctr(ctx, "images", "import", "--snapshotter", d.Snapshotter, tarPath)
	return err
}

// LogTail returns the last n lines of containerd's log.
func (d *Daemon) LogTail(n int) string {
	data, err := os.ReadFile(d.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ShimPids returns the PIDs of the shims serving this daemon: processes whose command line has
// exactly "-address <Address>".
func (d *Daemon) ShimPids() []int {
	return findProcs(func(pid int) bool {
		args := cmdline(pid)
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == d.Address {
				return true
			}
		}
		return false
	})
}

// Close removes every container and task the daemon holds, stops it, then kills whatever it
// left behind (shims by their -address, container processes by their cgroup under
// /<namespace>/), removes those cgroups, unmounts everything under Dir and deletes Dir. With
// keepLog the log is first moved to /tmp/cryo-it-<namespace>.log, whose path is returned.
func (d *Daemon) Close(keepLog bool) (string, error) {
	var errs []error
	if d.cmd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		errs = append(errs, d.removeAll(ctx))
		cancel()
	}
	errs = append(errs, d.Stop())
	for _, pid := range d.ShimPids() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	errs = append(errs, killCgroupTree(d.Namespace))
	errs = append(errs, unmountUnder(d.Dir))
	// The runc shim of containers that nerdctl made keeps runc's default root; its namespace
	// directory there is ours (the namespace is unique) and empty once the containers are gone.
	os.Remove(filepath.Join("/run/containerd/runc", d.Namespace))
	kept := ""
	if keepLog {
		kept = filepath.Join("/tmp", "cryo-it-"+d.Namespace+".log")
		if err := os.Rename(d.logPath, kept); err != nil {
			errs = append(errs, err)
			kept = ""
		}
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		errs = append(errs, err)
	}
	return kept, errors.Join(errs...)
}

// removeAll deletes every task and container in every namespace, the way a careful user would.
func (d *Daemon) removeAll(ctx context.Context) error {
	nss, err := d.Ctr(ctx, "namespaces", "ls", "-q")
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range strings.Fields(nss) {
		ctr := func(args ...string) (string, error) {
			cmd := d.CtrCmd(ctx, args...)
			cmd.Args[4] = ns // -a ADDR -n NS
			return d.run(ctx, cmd)
		}
		tasks, _ := ctr("tasks", "ls", "-q")
		for _, id := range strings.Fields(tasks) {
			if _, err := ctr("tasks", "rm", "-f", id); err != nil {
				errs = append(errs, err)
			}
		}
		ctrs, _ := ctr("containers", "ls", "-q")
		for _, id := range strings.Fields(ctrs) {
			if _, err := ctr("containers", "rm", id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
