package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine"
	"github.com/cryo-run/cryo/integration/testutil"
	"github.com/cryo-run/cryo/runtime/internal/nsenter"
)

// startDetached creates and starts a long-running container; cleanup
// force-deletes it.
func startDetached(t *testing.T, r *Runtime, id, bundle string, s *specs.Spec) *Container {
	t.Helper()
	ctx := context.Background()
	c, err := r.Create(ctx, id, CreateOpts{Bundle: bundle, Spec: s})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	return c
}

func execOutput(t *testing.T, c *Container, p *specs.Process) (int, string) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "exec")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	proc, err := c.Exec(context.Background(), ExecOpts{Process: p, Stdout: out, Stderr: out})
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	code, err := proc.Wait()
	if err != nil {
		t.Fatalf("wait exec: %v", err)
	}
	b, _ := os.ReadFile(out.Name())
	return code, string(b)
}

func shProcess(base *specs.Process, script string) *specs.Process {
	p := *base
	p.Args = []string{"sh", "-c", script}
	return &p
}

func TestStateTransitions(t *testing.T) {
	bundle, s := newBundle(t, "sleep", "100")
	r := newRuntime(t)
	ctx := context.Background()
	c, err := r.Create(ctx, "st", CreateOpts{Bundle: bundle, Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	if st, _ := c.Status(); st != Created {
		t.Fatalf("after create: got %s, want created", st)
	}
	if _, err := r.Create(ctx, "st", CreateOpts{Bundle: bundle, Spec: s}); !errors.Is(err, ErrExist) {
		t.Fatalf("second create: got %v, want ErrExist", err)
	}
	// A created container's init is PID 1 of its pid namespace, waiting.
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.Pid())); strings.TrimSpace(string(comm)) == "sleep" {
		t.Fatal("process started before start")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := r.Load("st")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := l.State(); st.Status != specs.StateRunning || st.Pid != c.Pid() {
		t.Fatalf("after start: got %+v, want running pid %d", st, c.Pid())
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.Pid())); strings.TrimSpace(string(comm)) != "sleep" {
		t.Fatalf("init comm after start: got %q, want sleep", comm)
	}
	if err := l.Start(ctx); !errors.Is(err, ErrAlreadyStarted) {
		t.Fatalf("start twice: got %v, want ErrAlreadyStarted", err)
	}
	if err := l.Delete(ctx, false); !errors.Is(err, ErrNotStopped) {
		t.Fatalf("delete running: got %v, want ErrNotStopped", err)
	}
	if err := l.Pause(); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Status(); st != Paused {
		t.Fatalf("after pause: got %s, want paused", st)
	}
	if err := l.Pause(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("pause twice: got %v, want ErrNotRunning", err)
	}
	if err := l.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := l.Resume(); !errors.Is(err, ErrNotPaused) {
		t.Fatalf("resume running: got %v, want ErrNotPaused", err)
	}
	if err := l.Kill(unix.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	code, err := c.Wait()
	if err != nil || code != 128+9 {
		t.Fatalf("wait: got %d %v, want 137", code, err)
	}
	if st, _ := l.State(); st.Status != specs.StateStopped || st.Pid != 0 {
		t.Fatalf("after kill: got %+v, want stopped pid 0", st)
	}
	if err := l.Kill(unix.SIGTERM, false); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("kill stopped: got %v, want ErrNotRunning", err)
	}
	if err := l.Start(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("start stopped: got %v, want ErrStopped", err)
	}
	if err := l.Delete(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Load("st"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("load deleted: got %v, want ErrNotExist", err)
	}
}

func TestDeleteCreatedKillsInit(t *testing.T) {
	bundle, s := newBundle(t, "sleep", "100")
	r := newRuntime(t)
	ctx := context.Background()
	c, err := r.Create(ctx, "dc", CreateOpts{Bundle: bundle, Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	if err := c.Delete(ctx, false); err != nil {
		t.Fatalf("delete created: %v", err)
	}
	assertNoLeaks(t, r, "dc", pid, s.Linux.CgroupsPath, bundle)
}

// assertNoLeaks checks that nothing of a deleted container is left: process,
// state dir, cgroup directories, host mounts under the bundle.
func assertNoLeaks(t *testing.T, r *Runtime, id string, pid int, cgroupPath, bundle string) {
	t.Helper()
	if pid != 0 {
		if _, err := procStartTime(pid); err == nil {
			t.Errorf("init %d still alive", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(r.Root(), id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir: got %v, want not exist", err)
	}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", e.Name(), cgroupPath)); err == nil {
			t.Errorf("cgroup %s left in %s", cgroupPath, e.Name())
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], bundle) {
			t.Errorf("host mount left: %s", sc.Text())
		}
	}
}

func TestCreateFailureCleansUp(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	t.Run("missing executable", func(t *testing.T) {
		bundle, s := newBundle(t, "no-such-binary")
		_, err := r.Create(ctx, "fail1", CreateOpts{Bundle: bundle, Spec: s})
		if err == nil || !strings.Contains(err.Error(), "executable file not found") {
			t.Fatalf("got %v, want executable file not found", err)
		}
		assertNoLeaks(t, r, "fail1", 0, s.Linux.CgroupsPath, bundle)
	})
	t.Run("unknown capability", func(t *testing.T) {
		bundle, s := newBundle(t, "true")
		s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_NO_SUCH")
		_, err := r.Create(ctx, "fail2", CreateOpts{Bundle: bundle, Spec: s})
		if !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("got %v, want ErrInvalidConfig", err)
		}
		assertNoLeaks(t, r, "fail2", 0, s.Linux.CgroupsPath, bundle)
	})
	t.Run("capability not grantable", func(t *testing.T) {
		bundle, s := newBundle(t, "true")
		s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_RESOURCE")
		_, err := r.Create(ctx, "fail3", CreateOpts{Bundle: bundle, Spec: s})
		have, _ := unix.PrctlRetInt(unix.PR_CAPBSET_READ, unix.CAP_SYS_RESOURCE, 0, 0, 0)
		if have == 0 && !errors.Is(err, ErrNotSupported) {
			t.Fatalf("got %v, want ErrNotSupported", err)
		}
		if have == 1 && err != nil {
			t.Fatalf("got %v, want success (CAP_SYS_RESOURCE is available)", err)
		}
	})
	t.Run("failing createRuntime hook", func(t *testing.T) {
		bundle, s := newBundle(t, "true")
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo boom >&2; exit 7"}}}}
		_, err := r.Create(ctx, "fail4", CreateOpts{Bundle: bundle, Spec: s})
		if err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("got %v, want hook failure with its stderr", err)
		}
		assertNoLeaks(t, r, "fail4", 0, s.Linux.CgroupsPath, bundle)
	})
	t.Run("bad mount", func(t *testing.T) {
		bundle, s := newBundle(t, "true")
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/mnt", Type: "bind", Source: "/no/such/dir", Options: []string{"bind"}})
		_, err := r.Create(ctx, "fail5", CreateOpts{Bundle: bundle, Spec: s})
		if err == nil || !strings.Contains(err.Error(), "/no/such/dir") {
			t.Fatalf("got %v, want bind source error", err)
		}
		assertNoLeaks(t, r, "fail5", 0, s.Linux.CgroupsPath, bundle)
	})
}

func TestRootfs(t *testing.T) {
	bundle, s := newBundle(t, "sh", "-c", strings.Join([]string{
		`touch /x 2>/dev/null && echo root=rw || echo root=ro`,
		`echo data > /data/f && echo data=rw`,
		`touch /ro/f 2>/dev/null && echo bindro=rw || echo bindro=ro`,
		`echo masked=$(cat /etc/secret)$(ls /etc/secretdir)`,
		`echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo procsys=rw || echo procsys=ro`,
		`grep -q ' /dev/pts devpts ' /proc/mounts && echo devpts=yes`,
		`grep -q ' /dev/shm tmpfs ' /proc/mounts && echo shm=yes`,
		`grep -q ' /dev/mqueue mqueue ' /proc/mounts && echo mqueue=yes`,
		`test -d /sys/fs/cgroup/freezer -o -f /sys/fs/cgroup/cgroup.procs && echo cgroup=yes`,
		`test -c /dev/null && test -c /dev/urandom && test -c /dev/tty && echo devices=yes`,
		`echo ptmx=$(readlink /dev/ptmx) fd=$(readlink /dev/fd)`,
		`echo hostname=$(hostname) domain=$(cat /proc/sys/kernel/domainname)`,
		`cat /proc/sys/net/ipv4/ip_forward`,
		`grep -c . /proc/net/dev`,
		`test -e /.pivot || echo pivoted=yes`,
	}, "; "))
	s.Root.Readonly = true
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.WriteFile(filepath.Join(rootfs, "etc/secret"), []byte("s3cret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(rootfs, "etc/secretdir/inner"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.Linux.MaskedPaths = append(s.Linux.MaskedPaths, "/etc/secret", "/etc/secretdir")
	data := t.TempDir()
	roDir := t.TempDir()
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/ro", Type: "bind", Source: roDir, Options: []string{"bind", "ro", "nosuid"}},
	)
	s.Domainname = "example.org"
	s.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
	code, out := runToExit(t, newRuntime(t), bundle, s)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{"root=ro", "data=rw", "bindro=ro", "masked=\n", "procsys=ro", "devpts=yes", "shm=yes",
		"mqueue=yes", "cgroup=yes", "devices=yes", "ptmx=pts/ptmx fd=/proc/self/fd", "hostname=cryo domain=example.org", "\n1\n", "pivoted=yes"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Only lo (plus the two header lines) in the new network namespace.
	if !strings.Contains(out, "\n3\n") {
		t.Errorf("want 3 lines in /proc/net/dev (lo only):\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(data, "f")); string(b) != "data\n" {
		t.Errorf("bind mount write: got %q", b)
	}
}

func TestNoPivot(t *testing.T) {
	bundle, s := newBundle(t, "sh", "-c", "ls /bin/busybox && grep -c ' / ' /proc/mounts")
	ctx := context.Background()
	r := newRuntime(t)
	out, _ := os.CreateTemp(t.TempDir(), "out")
	c, err := r.Create(ctx, "np", CreateOpts{Bundle: bundle, Spec: s, NoPivot: true, Stdout: out, Stderr: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if code, err := c.Wait(); code != 0 || err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("exit %d %v: %s", code, err, b)
	}
}

func TestProcessSettings(t *testing.T) {
	bundle, s := newBundle(t, "sh", "-c", strings.Join([]string{
		`echo id=$(id -u):$(id -g):$(id -G)`,
		`echo umask=$(umask)`,
		`echo nofile=$(ulimit -n)`,
		`grep -E '^(CapBnd|CapEff|CapPrm|CapInh|CapAmb|NoNewPrivs)' /proc/self/status`,
		`echo cwd=$(pwd) env=$FOO home=$HOME`,
		`cat /proc/self/oom_score_adj`,
	}, "; "))
	umask := uint32(0o027)
	s.Process.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{2000, 2001}, Umask: &umask}
	s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 321, Hard: 654}}
	caps := []string{"CAP_KILL", "CAP_NET_BIND_SERVICE"}
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: append(caps, "CAP_CHOWN"), Effective: caps, Permitted: caps, Inheritable: caps, Ambient: []string{"CAP_KILL"}}
	s.Process.Cwd = "/tmp"
	s.Process.Env = append(s.Process.Env, "FOO=bar")
	s.Process.NoNewPrivileges = true
	adj := 500
	s.Process.OOMScoreAdj = &adj
	code, out := runToExit(t, newRuntime(t), bundle, s)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	// A non-root process keeps across execve only its ambient capabilities
	// in the permitted and effective sets.
	kill, nbs, chown := uint64(1)<<unix.CAP_KILL, uint64(1)<<unix.CAP_NET_BIND_SERVICE, uint64(1)<<unix.CAP_CHOWN
	for _, want := range []string{
		"id=1000:1001:1001 2000 2001", "umask=0027", "nofile=321",
		fmt.Sprintf("CapInh:\t%016x", kill|nbs), fmt.Sprintf("CapPrm:\t%016x", kill),
		fmt.Sprintf("CapEff:\t%016x", kill), fmt.Sprintf("CapBnd:\t%016x", kill|nbs|chown),
		fmt.Sprintf("CapAmb:\t%016x", kill), "NoNewPrivs:\t1", "cwd=/tmp env=bar home=/", "\n500\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestOOMScoreAdjLowering(t *testing.T) {
	have, _ := unix.PrctlRetInt(unix.PR_CAPBSET_READ, unix.CAP_SYS_RESOURCE, 0, 0, 0)
	bundle, s := newBundle(t, "true")
	adj := -500
	s.Process.OOMScoreAdj = &adj
	r := newRuntime(t)
	c, err := r.Create(context.Background(), "oom", CreateOpts{Bundle: bundle, Spec: s})
	if have == 1 {
		// With CAP_SYS_RESOURCE (not on this project's machines) lowering is allowed.
		if err != nil {
			t.Fatalf("create with oomScoreAdj -500 and CAP_SYS_RESOURCE: %v", err)
		}
		if err := c.Delete(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
		t.Fatalf("got %v, want an error naming CAP_SYS_RESOURCE", err)
	}
	assertNoLeaks(t, r, "oom", 0, s.Linux.CgroupsPath, bundle)
}

func TestHooks(t *testing.T) {
	out := t.TempDir()
	bundle, s := newBundle(t, "true")
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/out", Type: "bind", Source: out, Options: []string{"bind"}})
	hook := func(name, dir string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + dir + "/" + name + "; echo $X >> " + dir + "/" + name}, Env: []string{"X=env-" + name}}
	}
	timeout := 5
	s.Hooks = &specs.Hooks{
		CreateRuntime:   []specs.Hook{hook("createRuntime", out)},
		CreateContainer: []specs.Hook{hook("createContainer", out)},
		StartContainer:  []specs.Hook{hook("startContainer", "/out")},
		Poststart:       []specs.Hook{hook("poststart", out)},
		Poststop:        []specs.Hook{hook("poststop", out)},
	}
	s.Hooks.Poststop[0].Timeout = &timeout
	code, o := runToExit(t, newRuntime(t), bundle, s)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, o)
	}
	for name, status := range map[string]string{"createRuntime": "creating", "createContainer": "creating",
		"startContainer": "created", "poststart": "running", "poststop": "stopped"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Errorf("hook %s did not run: %v", name, err)
			continue
		}
		if !strings.Contains(string(b), `"status":"`+status+`"`) || !strings.Contains(string(b), "env-"+name) {
			t.Errorf("hook %s: got %s, want status %s and its env", name, b, status)
		}
	}
}

func TestHookTimeout(t *testing.T) {
	bundle, s := newBundle(t, "true")
	timeout := 1
	s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sleep", Args: []string{"sleep", "30"}, Timeout: &timeout}}}
	r := newRuntime(t)
	start := time.Now()
	_, err := r.Create(context.Background(), "hto", CreateOpts{Bundle: bundle, Spec: s})
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("got %v, want timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("hook timeout took %v", d)
	}
	assertNoLeaks(t, r, "hto", 0, s.Linux.CgroupsPath, bundle)
}

func nsLinks(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ns := range []string{"ipc", "mnt", "net", "pid", "uts", "cgroup", "user", "time"} {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if err != nil {
			t.Fatal(err)
		}
		out[ns] = l
	}
	return out
}

func TestExec(t *testing.T) {
	bundle, s := newBundle(t, "sleep", "100")
	r := newRuntime(t)
	c := startDetached(t, r, "ex", bundle, s)
	ctx := context.Background()
	out, _ := os.CreateTemp(t.TempDir(), "out")
	p := shProcess(s.Process, "read x; echo pid=$$; hostname")
	stdinR, stdinW, _ := os.Pipe()
	proc, err := c.Exec(ctx, ExecOpts{Process: p, Stdin: stdinR, Stdout: out, Stderr: out})
	stdinR.Close()
	if err != nil {
		t.Fatal(err)
	}
	initNS, execNS := nsLinks(t, c.Pid()), nsLinks(t, proc.Pid)
	for ns, l := range initNS {
		if execNS[ns] != l {
			t.Errorf("namespace %s: exec %s, init %s", ns, execNS[ns], l)
		}
	}
	initCg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.Pid()))
	execCg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", proc.Pid))
	if string(initCg) != string(execCg) {
		t.Errorf("cgroup: exec %s, init %s", execCg, initCg)
	}
	pids, err := c.Processes()
	if err != nil || len(pids) != 2 {
		t.Errorf("processes: got %v %v, want init and exec", pids, err)
	}
	stdinW.Close()
	if code, err := proc.Wait(); code != 0 || err != nil {
		t.Fatalf("exec exit: %d %v", code, err)
	}
	b, _ := os.ReadFile(out.Name())
	if !strings.Contains(string(b), "\ncryo\n") || strings.Contains(string(b), fmt.Sprintf("pid=%d\n", proc.Pid)) || strings.Contains(string(b), "pid=1\n") {
		t.Errorf("exec output: %q, want a container pid (not 1, not host %d) and the container hostname", b, proc.Pid)
	}
	code, o := execOutput(t, c, shProcess(s.Process, "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; id -u; exit 5"))
	if code != 5 || !strings.Contains(o, "NoNewPrivs:\t1") || !strings.Contains(o, "CapEff:\t00000000200004"[:8]) {
		t.Errorf("exec exit %d output %q", code, o)
	}
	u := *s.Process
	u.User = specs.User{UID: 123, GID: 456}
	u.Args = []string{"id"}
	if _, o := execOutput(t, c, &u); !strings.Contains(o, "uid=123 gid=456") {
		t.Errorf("exec as user: %q", o)
	}
	bad := *s.Process
	bad.Args = []string{"nope"}
	if _, err := c.Exec(ctx, ExecOpts{Process: &bad}); err == nil || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("exec missing binary: got %v", err)
	}
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, ExecOpts{Process: shProcess(s.Process, "true")}); !errors.Is(err, ErrPaused) {
		t.Errorf("exec paused: got %v, want ErrPaused", err)
	}
	if err := c.Resume(); err != nil {
		t.Fatal(err)
	}
}

func TestKillAllAndDeleteForce(t *testing.T) {
	bundle, s := newBundle(t, "sh", "-c", "sleep 100 & sleep 100 & wait")
	r := newRuntime(t)
	c := startDetached(t, r, "ka", bundle, s)
	deadline := time.Now().Add(5 * time.Second)
	var pids []int
	for time.Now().Before(deadline) {
		pids, _ = c.Processes()
		if len(pids) == 3 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(pids) != 3 {
		t.Fatalf("processes: got %v, want 3", pids)
	}
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(context.Background(), true); err != nil {
		t.Fatalf("delete --force of paused: %v", err)
	}
	for _, p := range pids {
		if _, err := procStartTime(p); err == nil {
			t.Errorf("pid %d alive after delete --force", p)
		}
	}
	assertNoLeaks(t, r, "ka", c.Pid(), s.Linux.CgroupsPath, bundle)
}

func TestTerminal(t *testing.T) {
	bundle, s := newBundle(t, "sh", "-c", "tty; stty size; echo done")
	s.Process.Terminal = true
	s.Process.ConsoleSize = &specs.Box{Height: 33, Width: 111}
	sock, err := NewConsoleSocket(filepath.Join(t.TempDir(), "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	r := newRuntime(t)
	ctx := context.Background()
	type res struct {
		f   *os.File
		err error
	}
	ch := make(chan res, 1)
	go func() {
		f, err := sock.ReceiveMaster()
		ch <- res{f, err}
	}()
	c, err := r.Create(ctx, "tty", CreateOpts{Bundle: bundle, Spec: s, ConsoleSocket: sock.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	rr := <-ch
	if rr.err != nil {
		t.Fatal(rr.err)
	}
	defer rr.f.Close()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	b := make([]byte, 1024)
	for {
		n, err := rr.f.Read(b)
		buf.Write(b[:n])
		if err != nil || strings.Contains(buf.String(), "done") {
			break
		}
	}
	if _, err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	if !strings.Contains(got, "/dev/pts/0") || !strings.Contains(got, "33 111") {
		t.Fatalf("terminal output %q, want /dev/pts/0 and size 33 111", got)
	}
}

func TestJoinNamespaceByPath(t *testing.T) {
	bundleA, sA := newBundle(t, "sleep", "100")
	r := newRuntime(t)
	a := startDetached(t, r, "nsa", bundleA, sA)
	bundleB, sB := newBundle(t, "sleep", "100")
	sB.Linux.CgroupsPath += "-b"
	for i, ns := range sB.Linux.Namespaces {
		switch ns.Type {
		case specs.NetworkNamespace:
			sB.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/net", a.Pid())
		case specs.IPCNamespace:
			sB.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/ipc", a.Pid())
		}
	}
	sB.Hostname = "bee"
	b := startDetached(t, r, "nsb", bundleB, sB)
	na, nb := nsLinks(t, a.Pid()), nsLinks(t, b.Pid())
	if na["net"] != nb["net"] || na["ipc"] != nb["ipc"] {
		t.Errorf("joined net/ipc differ: %v vs %v", na, nb)
	}
	if na["pid"] == nb["pid"] || na["uts"] == nb["uts"] || na["mnt"] == nb["mnt"] {
		t.Errorf("pid/uts/mnt should be distinct: %v vs %v", na, nb)
	}
	self := nsLinks(t, os.Getpid())
	if self["net"] == na["net"] {
		t.Error("container shares the host network namespace")
	}
	// Joining the user namespace we are in already is no change.
	sB.Linux.Namespaces = append(sB.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: fmt.Sprintf("/proc/%d/ns/user", os.Getpid())})
	sB.Linux.UIDMappings = nil
	sB.Linux.CgroupsPath += "-c"
	c := startDetached(t, r, "nsc", bundleB, sB)
	if nc := nsLinks(t, c.Pid()); nc["user"] != self["user"] || nc["net"] != na["net"] {
		t.Errorf("container joining the host user namespace: %v, host %v", nc, self)
	}
}

func TestUserNamespace(t *testing.T) {
	bundle, s := newBundle(t, "sh", "-c", "id -u; cat /proc/self/uid_map; cat /proc/self/gid_map; test -c /dev/null && echo null-ok")
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	// cgroup v1 cannot be mounted from a user namespace; keep the test on
	// what every host supports.
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if m.Type != "cgroup" {
			mounts = append(mounts, m)
		}
	}
	s.Mounts = mounts
	// The mapped root must be able to reach the rootfs (t.TempDir is 0700).
	for d := bundle; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := newRuntime(t)
	code, out := runToExit(t, r, bundle, s)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	fields := strings.Fields(out)
	if len(fields) < 7 || fields[0] != "0" || fields[1] != "0" || fields[2] != "200000" || fields[3] != "65536" || !strings.Contains(out, "null-ok") {
		t.Fatalf("user namespace output %q, want uid 0 mapped to 200000", out)
	}
}

func TestTimeNamespaceOffsets(t *testing.T) {
	bundle, s := newBundle(t, "cat", "/proc/uptime")
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace})
	s.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"boottime": {Secs: 1000000}}
	code, out := runToExit(t, newRuntime(t), bundle, s)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	up, err := strconv.ParseFloat(strings.Fields(out)[0], 64)
	if err != nil || up < 1000000 {
		t.Fatalf("uptime in the container %q, want >= 1000000 (boottime offset)", out)
	}
}

func TestInitELF(t *testing.T) {
	bundle, s := newBundle(t, "unused")
	elf, err := os.ReadFile(filepath.Join(bundle, "rootfs/bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t)
	ctx := context.Background()
	c, err := r.Create(ctx, "elf", CreateOpts{Bundle: bundle, Spec: s, InitELF: elf, InitArgs: []string{"sh", "-c", "echo $$ > /tmp/pid; exec sleep 100"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	if st, _ := c.Status(); st != Running {
		t.Fatalf("status after create with InitELF: got %s, want running", st)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c.Pid()))
	if !strings.Contains(exe, "memfd:cryo-init") {
		t.Errorf("init exe %q, want the memfd", exe)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid()))
	if !strings.Contains(string(status), fmt.Sprintf("NSpid:\t%d\t1\n", c.Pid())) {
		t.Errorf("init is not pid 1 of its namespace:\n%s", status)
	}
	// The shell itself moves fds around while it redirects (busybox saves
	// stdout at fd 10 for `echo > file`): look once it has exec'd sleep.
	deadline := time.Now().Add(10 * time.Second)
	for {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.Pid()))
		if strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("init never exec'd sleep (comm %q)", comm)
		}
		time.Sleep(5 * time.Millisecond)
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.Pid()))
	for _, fd := range fds {
		if n, _ := strconv.Atoi(fd.Name()); n > 2 {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", c.Pid(), fd.Name()))
			t.Errorf("init holds fd %d -> %s", n, l)
		}
	}
	if err := c.Start(ctx); !errors.Is(err, ErrAlreadyStarted) {
		t.Errorf("start after InitELF create: got %v, want ErrAlreadyStarted", err)
	}
}

func TestSeccomp(t *testing.T) {
	eperm := uint(1)
	profile := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64},
		Syscalls: []specs.LinuxSyscall{{
			Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &eperm,
		}},
	}
	for _, nnp := range []bool{true, false} {
		t.Run(fmt.Sprintf("nnp=%v", nnp), func(t *testing.T) {
			bundle, s := newBundle(t, "sleep", "100")
			s.Linux.Seccomp = profile
			s.Process.NoNewPrivileges = nnp
			r := newRuntime(t)
			c := startDetached(t, r, "sc", bundle, s)
			code, out := execOutput(t, c, shProcess(s.Process, "mkdir /tmp/d; grep Seccomp: /proc/self/status; grep Seccomp: /proc/1/status"))
			if code != 0 || !strings.Contains(out, "Operation not permitted") || strings.Count(out, "Seccomp:\t2") != 2 {
				t.Fatalf("exit %d output %q, want mkdir refused and filter mode 2 in init and exec", code, out)
			}
		})
	}
	bundle, s := newBundle(t, "true")
	s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_BOGUS"}
	r := newRuntime(t)
	if _, err := r.Create(context.Background(), "scbad", CreateOpts{Bundle: bundle, Spec: s}); err == nil {
		t.Fatal("bad seccomp action accepted")
	}
	assertNoLeaks(t, r, "scbad", 0, s.Linux.CgroupsPath, bundle)
}

// TestInitELFEngineStub starts the engine's restore stub as the container's
// init: it must be PID 1 of the new namespaces, parked in pause().
func TestInitELFEngineStub(t *testing.T) {
	bundle, s := newBundle(t, "unused")
	r := newRuntime(t)
	ctx := context.Background()
	c, err := r.Create(ctx, "stub", CreateOpts{Bundle: bundle, Spec: s, InitELF: engine.Stub()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Pid()))
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", c.Pid()))
		// syscall 34 is pause.
		if strings.Contains(string(stat), ") S ") && strings.HasPrefix(string(wchan), "34 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stub not parked in pause(): stat %q syscall %q", stat, wchan)
		}
		time.Sleep(5 * time.Millisecond)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid()))
	if !strings.Contains(string(status), fmt.Sprintf("NSpid:\t%d\t1\n", c.Pid())) {
		t.Fatalf("stub is not PID 1:\n%s", status)
	}
	if st, _ := c.Status(); st != Running {
		t.Fatalf("status %s, want running", st)
	}
	if err := c.Delete(ctx, true); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, r, "stub", c.Pid(), s.Linux.CgroupsPath, bundle)
}

func TestNsenterCode(t *testing.T) {
	as, err1 := exec.LookPath("as")
	objcopy, err2 := exec.LookPath("objcopy")
	if err1 != nil || err2 != nil {
		testutil.SkipOrFail(t, "GNU as/objcopy (binutils) not installed")
	}
	dir := t.TempDir()
	obj, bin := filepath.Join(dir, "n.o"), filepath.Join(dir, "n.bin")
	if out, err := exec.Command(as, "--64", "-o", obj, "testdata/nsenter.s").CombinedOutput(); err != nil {
		t.Fatalf("as: %v %s", err, out)
	}
	if out, err := exec.Command(objcopy, "-O", "binary", "-j", ".text", obj, bin).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v %s", err, out)
	}
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(nsenterCode) {
		t.Fatalf("nsenterCode differs from testdata/nsenter.s:\ngot  %x\nwant %x", nsenterCode, want)
	}
}

// TestExecUserAndTimeNamespaces execs into a container that has its own
// user and time namespaces, which only a single-threaded process can join:
// through the cgo constructor (when linked in) and through the nsenter ELF.
func TestExecUserAndTimeNamespaces(t *testing.T) {
	t.Run("constructor", func(t *testing.T) {
		if !nsenter.Available {
			testutil.SkipOrFail(t, "built without cgo: the nsenter constructor is not linked in (the ELF path is tested below)")
		}
		testExecUserAndTime(t, false)
	})
	t.Run("elf", func(t *testing.T) { testExecUserAndTime(t, true) })
}

func testExecUserAndTime(t *testing.T, elf bool) {
	bundle, s := newBundle(t, "sleep", "100")
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace}, specs.LinuxNamespace{Type: specs.TimeNamespace})
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}}
	s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}}
	s.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"boottime": {Secs: 2000000}}
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if m.Type != "cgroup" {
			mounts = append(mounts, m)
		}
	}
	s.Mounts = mounts
	for d := bundle; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Become a subreaper for the exec'd grandchild's exit status.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	r := newRuntime(t)
	r.forceNsenterELF = elf
	c := startDetached(t, r, "usertime", bundle, s)
	out, _ := os.CreateTemp(t.TempDir(), "out")
	p := shProcess(s.Process, "id -u; cat /proc/self/uid_map; cat /proc/uptime; read x; exit 3")
	stdinR, stdinW, _ := os.Pipe()
	proc, err := c.Exec(context.Background(), ExecOpts{Process: p, Stdin: stdinR, Stdout: out, Stderr: out})
	stdinR.Close()
	if err != nil {
		t.Fatal(err)
	}
	initNS, execNS := nsLinks(t, c.Pid()), nsLinks(t, proc.Pid)
	for ns, l := range initNS {
		if execNS[ns] != l {
			t.Errorf("namespace %s: exec %s, init %s", ns, execNS[ns], l)
		}
	}
	initCg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.Pid()))
	execCg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", proc.Pid))
	if string(initCg) != string(execCg) {
		t.Errorf("cgroup: exec %s, init %s", execCg, initCg)
	}
	stdinW.Close()
	code, err := proc.Wait()
	if err != nil || code != 3 {
		t.Fatalf("exec exit: %d %v, want 3", code, err)
	}
	b, _ := os.ReadFile(out.Name())
	f := strings.Fields(string(b))
	if len(f) < 5 || f[0] != "0" || f[2] != "300000" {
		t.Fatalf("exec output %q, want uid 0 mapped to 300000", b)
	}
	if up, _ := strconv.ParseFloat(f[4], 64); up < 2000000 {
		t.Fatalf("exec uptime %q, want the container's boottime offset", f[4])
	}
}
