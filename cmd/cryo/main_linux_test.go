package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/integration/testutil"
	"github.com/cryo-run/cryo/oci"
	"github.com/cryo-run/cryo/runtime"
)

// cryoBin is the cryo binary built by TestMain.
var cryoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "runtime-cryo-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cryoBin = filepath.Join(dir, "cryo")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(goruntime.GOROOT(), "bin", "go")
	}
	// Built as the Makefile builds it.
	build := exec.Command(goBin, "build", "-trimpath", "-o", cryoBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build cryo: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type cryoCLI struct {
	t    testing.TB
	root string
}

func newCLI(t testing.TB) *cryoCLI {
	testutil.RequiresRoot(t)
	return &cryoCLI{t: t, root: filepath.Join(t.TempDir(), "root")}
}

// run runs cryo with --root and returns stdout, stderr and the exit code.
// Its stdio are files, not pipes: a detached container inherits them and
// would keep a pipe open.
func (c *cryoCLI) run(args ...string) (string, string, int) {
	c.t.Helper()
	return c.runExtra(nil, args...)
}

// runExtra is run with extra files passed to cryo as fds 3, 4, ...
func (c *cryoCLI) runExtra(extra []*os.File, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(cryoBin, append([]string{"--root", c.root}, args...)...)
	cmd.ExtraFiles = extra
	outF, err := os.CreateTemp("", "runtime-cli-out-")
	if err != nil {
		c.t.Fatal(err)
	}
	defer os.Remove(outF.Name())
	defer outF.Close()
	errF, err := os.CreateTemp("", "runtime-cli-err-")
	if err != nil {
		c.t.Fatal(err)
	}
	defer os.Remove(errF.Name())
	defer errF.Close()
	cmd.Stdout, cmd.Stderr = outF, errF
	err = cmd.Run()
	out, _ := os.ReadFile(outF.Name())
	errb, _ := os.ReadFile(errF.Name())
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run cryo %v: %v", args, err)
	}
	return string(out), string(errb), code
}

func (c *cryoCLI) ok(args ...string) string {
	c.t.Helper()
	out, errs, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("cryo %v: exit %d: %s%s", args, code, out, errs)
	}
	return out
}

func (c *cryoCLI) state(id string) runtime.State {
	c.t.Helper()
	var st runtime.State
	if err := json.Unmarshal([]byte(c.ok("state", id)), &st); err != nil {
		c.t.Fatal(err)
	}
	return st
}

// bundle writes a busybox bundle whose process runs args.
func bundle(t testing.TB, args ...string) (string, *specs.Spec) {
	t.Helper()
	dir := t.TempDir()
	testutil.BusyboxRootfs(t, filepath.Join(dir, "rootfs"))
	s := runtime.DefaultSpec()
	s.Process.Terminal = false
	s.Process.Args = args
	s.Root.Readonly = false
	s.Linux.CgroupsPath = "/cryo-runtime-cli-" + strings.ReplaceAll(t.Name(), "/", "-")
	writeSpec(t, dir, s)
	return dir, s
}

func writeSpec(t testing.TB, dir string, s *specs.Spec) {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, oci.ConfigFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitStatus(t *testing.T, c *cryoCLI, id string, want specs.ContainerState) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _, code := c.run("state", id)
		var st runtime.State
		if code == 0 {
			_ = json.Unmarshal([]byte(out), &st)
		}
		if st.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s: got %s, want %s", id, st.Status, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCLIRunDetached(t *testing.T) {
	c := newCLI(t)
	dir, s := bundle(t, "sleep", "100")
	id := "cli-run-d"
	pidFile := filepath.Join(t.TempDir(), "pid")
	c.ok("run", "-d", "--bundle", dir, "--pid-file", pidFile, id)
	t.Cleanup(func() { c.run("delete", "-f", id) })
	st := c.state(id)
	if st.Status != specs.StateRunning || st.Pid == 0 || st.ID != id || st.Bundle != dir || st.Rootfs != filepath.Join(dir, "rootfs") {
		t.Fatalf("state: %+v", st)
	}
	if b, _ := os.ReadFile(pidFile); string(b) != strconv.Itoa(st.Pid) {
		t.Fatalf("pid file %q, want %d", b, st.Pid)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.Pid))
	if !strings.Contains(string(status), fmt.Sprintf("NSpid:\t%d\t1\n", st.Pid)) {
		t.Fatalf("init is not PID 1 of its own pid namespace:\n%s", status)
	}
	if out := c.ok("exec", id, "sh", "-c", "echo $$ $(hostname); cat /proc/1/cmdline"); !strings.HasSuffix(out, "cryo\nsleep\x00100\x00") {
		t.Fatalf("exec output %q", out)
	}
	if _, _, code := c.run("exec", id, "sh", "-c", "exit 7"); code != 7 {
		t.Fatalf("exec exit code: got %d, want 7", code)
	}
	if out := c.ok("list", "-q"); out != id+"\n" {
		t.Fatalf("list -q: %q", out)
	}
	var list []runtime.State
	if err := json.Unmarshal([]byte(c.ok("list", "--format", "json")), &list); err != nil || len(list) != 1 || list[0].Pid != st.Pid {
		t.Fatalf("list json: %v %+v", err, list)
	}
	if out := c.ok("list"); !strings.Contains(out, "running") || !strings.HasPrefix(out, "ID") {
		t.Fatalf("list: %q", out)
	}
	var pids []int
	if err := json.Unmarshal([]byte(c.ok("ps", "--format", "json", id)), &pids); err != nil || len(pids) != 1 || pids[0] != st.Pid {
		t.Fatalf("ps json: %v %v", err, pids)
	}
	if out := c.ok("ps", id); !strings.Contains(out, strconv.Itoa(st.Pid)) || !strings.Contains(out, "sleep 100") {
		t.Fatalf("ps: %q", out)
	}
	c.ok("pause", id)
	if st := c.state(id); st.Status != specs.ContainerState(runtime.Paused) {
		t.Fatalf("after pause: %s", st.Status)
	}
	c.ok("resume", id)
	c.ok("kill", id, "KILL")
	waitStatus(t, c, id, specs.StateStopped)
	if _, errs, code := c.run("kill", id); code != 1 || !strings.Contains(errs, "container not running") {
		t.Fatalf("kill stopped: exit %d %q", code, errs)
	}
	c.ok("delete", id)
	if _, errs, code := c.run("state", id); code != 1 || !strings.Contains(errs, "does not exist") {
		t.Fatalf("state of deleted: exit %d %q", code, errs)
	}
	for _, d := range []string{"freezer", "memory", "pids"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", d, s.Linux.CgroupsPath)); err == nil {
			t.Errorf("cgroup left in %s", d)
		}
	}
	if _, err := os.Stat(filepath.Join(c.root, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left: %v", err)
	}
}

func TestCLIRunForeground(t *testing.T) {
	c := newCLI(t)
	dir, _ := bundle(t, "sh", "-c", "echo out; echo err >&2; exit 42")
	out, errs, code := c.run("run", "--bundle", dir, "cli-fg")
	if code != 42 || out != "out\n" || errs != "err\n" {
		t.Fatalf("run: exit %d stdout %q stderr %q, want 42 out err", code, out, errs)
	}
	if out := c.ok("list", "-q"); out != "" {
		t.Fatalf("container left after run: %q", out)
	}
	// A signal to `cryo run` is forwarded to the container's init.
	dir, _ = bundle(t, "sh", "-c", `trap "exit 5" USR1; echo ready > /tmp/ready; sleep 100 & wait`)
	id := "cli-fg2"
	cmd := exec.Command(cryoBin, "--root", c.root, "run", "--bundle", dir, id)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.run("delete", "-f", id) })
	waitFile(t, filepath.Join(dir, "rootfs/tmp/ready"))
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 5 {
		t.Fatalf("run after forwarded SIGUSR1: %v, want exit 5", err)
	}
	// Killed from outside: 128+9.
	dir, _ = bundle(t, "sleep", "100")
	id = "cli-fg3"
	cmd = exec.Command(cryoBin, "--root", c.root, "run", "--bundle", dir, id)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.run("delete", "-f", id) })
	waitStatus(t, c, id, specs.StateRunning)
	c.ok("kill", id, "9")
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 137 {
		t.Fatalf("run of a SIGKILLed container: %v, want exit 137", err)
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCLIWrongState(t *testing.T) {
	c := newCLI(t)
	dir, _ := bundle(t, "sleep", "100")
	id := "cli-ws"
	c.ok("create", "--bundle", dir, id)
	t.Cleanup(func() { c.run("delete", "-f", id) })
	if st := c.state(id); st.Status != specs.StateCreated {
		t.Fatalf("after create: %s", st.Status)
	}
	if _, errs, code := c.run("create", "--bundle", dir, id); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("create twice: exit %d %q", code, errs)
	}
	c.ok("start", id)
	if _, errs, code := c.run("start", id); code != 1 || !strings.Contains(errs, "cannot start an already running container") {
		t.Fatalf("start twice: exit %d %q", code, errs)
	}
	if _, errs, code := c.run("delete", id); code != 1 || !strings.Contains(errs, "cannot delete container cli-ws that is not stopped: running") {
		t.Fatalf("delete running: exit %d %q", code, errs)
	}
	if _, errs, code := c.run("resume", id); code != 1 || !strings.Contains(errs, "container not paused") {
		t.Fatalf("resume running: exit %d %q", code, errs)
	}
	c.ok("delete", "--force", id)
	if _, _, code := c.run("delete", "--force", id); code != 0 {
		t.Fatalf("delete --force of a missing container: exit %d, want 0", code)
	}
	if _, errs, code := c.run("start", "nope"); code != 1 || !strings.Contains(errs, "does not exist") {
		t.Fatalf("start missing: exit %d %q", code, errs)
	}
	if _, errs, code := c.run("create", "--bundle", dir, "bad/id"); code != 1 || !strings.Contains(errs, "invalid container id") {
		t.Fatalf("bad id: exit %d %q", code, errs)
	}
}

func TestCLIGlobalFlags(t *testing.T) {
	c := newCLI(t)
	if out := c.ok("--version"); !strings.Contains(out, "cryo version") || !strings.Contains(out, "spec: "+specs.Version) {
		t.Fatalf("--version: %q", out)
	}
	if _, errs, code := c.run("--systemd-cgroup", "list"); code != 1 || !strings.Contains(errs, "not supported") {
		t.Fatalf("--systemd-cgroup: exit %d %q", code, errs)
	}
	logFile := filepath.Join(t.TempDir(), "log.json")
	if _, _, code := c.run("--log", logFile, "--log-format", "json", "start", "nope"); code != 1 {
		t.Fatalf("start missing: exit %d", code)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var entry struct{ Level, Msg string }
	if err := json.Unmarshal(bytes.TrimSpace(b), &entry); err != nil || entry.Level != "error" || !strings.Contains(entry.Msg, "does not exist") {
		t.Fatalf("json log %q: %v", b, err)
	}
	if _, _, code := c.run("--log-format", "xml", "list"); code != 1 {
		t.Fatal("bad --log-format accepted")
	}
}

func TestCLISpecAndFeatures(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	c.ok("spec", "--bundle", dir)
	s, err := oci.LoadSpec(dir)
	if err != nil {
		t.Fatalf("spec output does not load: %v", err)
	}
	if s.Process.Args[0] != "sh" || !s.Root.Readonly {
		t.Fatalf("default spec: %+v", s.Process)
	}
	if _, _, code := c.run("spec", "--bundle", dir); code != 1 {
		t.Fatal("spec overwrote an existing config.json")
	}
	var f struct {
		OCIVersionMax string `json:"ociVersionMax"`
		Hooks         []string
		Linux         struct{ Namespaces, Capabilities []string }
	}
	if err := json.Unmarshal([]byte(c.ok("features")), &f); err != nil {
		t.Fatal(err)
	}
	if f.OCIVersionMax != specs.Version || len(f.Hooks) != 6 || len(f.Linux.Namespaces) != 8 || len(f.Linux.Capabilities) < 41 {
		t.Fatalf("features: %+v", f)
	}
}

func TestCLIExecFlags(t *testing.T) {
	c := newCLI(t)
	dir, s := bundle(t, "sleep", "100")
	id := "cli-exec"
	c.ok("run", "-d", "--bundle", dir, id)
	t.Cleanup(func() { c.run("delete", "-f", id) })
	out := c.ok("exec", "--user", "1000:1000", "--cwd", "/tmp", "--env", "A=b", id, "sh", "-c", "id -u; id -g; pwd; echo $A")
	if out != "1000\n1000\n/tmp\nb\n" {
		t.Fatalf("exec flags: %q", out)
	}
	proc := *s.Process
	proc.Args = []string{"sh", "-c", "echo from-process-file"}
	pf := filepath.Join(t.TempDir(), "process.json")
	data, _ := json.Marshal(&proc)
	if err := os.WriteFile(pf, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := c.ok("exec", "--process", pf, id); out != "from-process-file\n" {
		t.Fatalf("exec --process: %q", out)
	}
	pidFile := filepath.Join(t.TempDir(), "exec.pid")
	c.ok("exec", "-d", "--pid-file", pidFile, id, "sleep", "50")
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(string(b))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("detached exec pid %q not alive", b)
	}
	var pids []int
	_ = json.Unmarshal([]byte(c.ok("ps", "-f", "json", id)), &pids)
	if len(pids) != 2 {
		t.Fatalf("ps after detached exec: %v", pids)
	}
}

type statsEvent struct {
	Type string
	ID   string
	Data struct {
		V1 *struct {
			Pids   *struct{ Current, Limit uint64 }
			Memory *struct {
				Usage *struct{ Limit uint64 }
			}
		}
		V2 *struct {
			Pids   *struct{ Current, Limit uint64 }
			Memory *struct{ UsageLimit uint64 }
		}
	}
}

func (e statsEvent) pids() (cur, limit uint64) {
	if e.Data.V1 != nil && e.Data.V1.Pids != nil {
		return e.Data.V1.Pids.Current, e.Data.V1.Pids.Limit
	}
	if e.Data.V2 != nil && e.Data.V2.Pids != nil {
		return e.Data.V2.Pids.Current, e.Data.V2.Pids.Limit
	}
	return 0, 0
}

func (e statsEvent) memLimit() uint64 {
	if e.Data.V1 != nil && e.Data.V1.Memory != nil && e.Data.V1.Memory.Usage != nil {
		return e.Data.V1.Memory.Usage.Limit
	}
	if e.Data.V2 != nil && e.Data.V2.Memory != nil {
		return e.Data.V2.Memory.UsageLimit
	}
	return 0
}

func TestCLIUpdateAndEvents(t *testing.T) {
	c := newCLI(t)
	dir, _ := bundle(t, "sh", "-c", "sleep 100 & sleep 100 & wait")
	id := "cli-upd"
	c.ok("run", "-d", "--bundle", dir, id)
	t.Cleanup(func() { c.run("delete", "-f", id) })
	c.ok("update", "--memory", "64m", "--pids-limit", "20", id)
	stats := func() statsEvent {
		var ev statsEvent
		if err := json.Unmarshal([]byte(c.ok("events", "--stats", id)), &ev); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	ev := stats()
	if ev.Type != "stats" || ev.ID != id {
		t.Fatalf("event: %+v", ev)
	}
	if _, limit := ev.pids(); limit != 20 {
		t.Fatalf("pids limit after update: got %d, want 20", limit)
	}
	if l := ev.memLimit(); l != 64<<20 {
		t.Fatalf("memory limit after update: got %d, want %d", l, 64<<20)
	}
	deadline := time.Now().Add(5 * time.Second)
	for cur, _ := ev.pids(); cur != 3 && time.Now().Before(deadline); cur, _ = ev.pids() {
		time.Sleep(10 * time.Millisecond)
		ev = stats()
	}
	if cur, _ := ev.pids(); cur != 3 {
		t.Fatalf("pids current: got %d, want 3", cur)
	}
	res := filepath.Join(t.TempDir(), "res.json")
	if err := os.WriteFile(res, []byte(`{"pids":{"limit":33}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.ok("update", "--resources", res, id)
	if _, limit := stats().pids(); limit != 33 {
		t.Fatalf("pids limit after --resources: got %d, want 33", limit)
	}
	// The record keeps both updates merged.
	r, err := runtime.New(c.root)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := r.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if rs := ct.Spec().Linux.Resources; rs.Memory == nil || *rs.Memory.Limit != 64<<20 || *rs.Pids.Limit != 33 {
		t.Fatalf("recorded resources: %+v", rs)
	}
	if _, errs, code := c.run("update", "--kernel-memory", "1m", id); code != 1 || !strings.Contains(errs, "not supported") {
		t.Fatalf("--kernel-memory: exit %d %q", code, errs)
	}
	// events streams stats lines until the container stops.
	cmd := exec.Command(cryoBin, "--root", c.root, "events", "--interval", "50ms", id)
	outF, _ := os.CreateTemp(t.TempDir(), "events")
	cmd.Stdout = outF
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for {
		b, _ := os.ReadFile(outF.Name())
		if strings.Count(string(b), `"type":"stats"`) >= 3 {
			break
		}
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("events printed %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.ok("kill", "--all", id, "KILL")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("events exit: %v", err)
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("events did not stop with the container")
	}
}

func TestCLIExecUserNamespace(t *testing.T) {
	c := newCLI(t)
	dir, s := bundle(t, "sleep", "100")
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 400000, Size: 65536}}
	s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 400000, Size: 65536}}
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if m.Type != "cgroup" { // cgroup v1 cannot be mounted from a user namespace
			mounts = append(mounts, m)
		}
	}
	s.Mounts = mounts
	writeSpec(t, dir, s)
	for d := dir; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	id := "cli-userns"
	c.ok("run", "-d", "--bundle", dir, id)
	t.Cleanup(func() { c.run("delete", "-f", id) })
	out, errs, code := c.run("exec", id, "sh", "-c", "id -u; head -1 /proc/self/uid_map; exit 4")
	if code != 4 || !strings.HasPrefix(out, "0\n") || !strings.Contains(out, "400000") {
		t.Fatalf("exec in user namespace: exit %d stdout %q stderr %q", code, out, errs)
	}
}

func TestCLITerminal(t *testing.T) {
	c := newCLI(t)
	dir, s := bundle(t, "sh", "-c", "tty; exit 3")
	s.Process.Terminal = true
	writeSpec(t, dir, s)
	// Without --detach and --console-socket, cryo run proxies the pty.
	out, errs, code := c.run("run", "--bundle", dir, "cli-tty")
	if code != 3 || !strings.Contains(out, "/dev/pts/0") {
		t.Fatalf("run with terminal: exit %d stdout %q stderr %q", code, out, errs)
	}
	if _, errs, code := c.run("run", "-d", "--bundle", dir, "cli-tty2"); code != 1 || !strings.Contains(errs, "console socket") {
		t.Fatalf("run -d with terminal and no console socket: exit %d %q", code, errs)
	}
	dir, _ = bundle(t, "sleep", "100")
	c.ok("run", "-d", "--bundle", dir, "cli-tty3")
	t.Cleanup(func() { c.run("delete", "-f", "cli-tty3") })
	out, errs, code = c.run("exec", "-t", "cli-tty3", "sh", "-c", "tty; exit 6")
	if code != 6 || !strings.Contains(out, "/dev/pts/") {
		t.Fatalf("exec -t: exit %d stdout %q stderr %q", code, out, errs)
	}
}

// readPipe closes our write end and reads what the container wrote to it.
func readPipe(t *testing.T, r, w *os.File) string {
	t.Helper()
	w.Close()
	b, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCLIPreserveFds passes pipes held by the test as fds 3.. to the
// container's process (run, create+start) and to an exec'd one: with
// --preserve-fds N exactly fds 3..3+N-1 arrive, under the same numbers.
func TestCLIPreserveFds(t *testing.T) {
	c := newCLI(t)
	pipe := func() (*os.File, *os.File) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		return r, w
	}
	// run in the foreground: fd 3 preserved, fd 4 (open in cryo) not.
	dir, _ := bundle(t, "sh", "-c", "echo run-fd3 >&3; if echo x >&4; then echo fd4-leaked >&3; fi; true")
	r3, w3 := pipe()
	r4, w4 := pipe()
	if out, errs, code := c.runExtra([]*os.File{w3, w4}, "run", "--preserve-fds", "1", "--bundle", dir, "cli-pfds-run"); code != 0 {
		t.Fatalf("run --preserve-fds 1: exit %d %s%s", code, out, errs)
	}
	if got := readPipe(t, r3, w3); got != "run-fd3\n" {
		t.Fatalf("container wrote %q to fd 3, want run-fd3", got)
	}
	if got := readPipe(t, r4, w4); got != "" {
		t.Fatalf("fd 4 reached the container: %q", got)
	}

	// create + start: the created init keeps fd 3 until it execs.
	dir, _ = bundle(t, "sh", "-c", "echo create-fd3 >&3; exec sleep 100")
	id := "cli-pfds"
	r3, w3 = pipe()
	if out, errs, code := c.runExtra([]*os.File{w3}, "create", "--preserve-fds", "1", "--bundle", dir, id); code != 0 {
		t.Fatalf("create --preserve-fds 1: exit %d %s%s", code, out, errs)
	}
	t.Cleanup(func() { c.run("delete", "-f", id) })
	c.ok("start", id)
	// The reader gets the line; EOF would only come after the container's
	// sleep exits, so read just the line.
	w3.Close()
	buf := make([]byte, 64)
	n, err := r3.Read(buf)
	r3.Close()
	if err != nil || string(buf[:n]) != "create-fd3\n" {
		t.Fatalf("created container wrote %q (%v) to fd 3, want create-fd3", buf[:n], err)
	}

	// exec with two preserved fds.
	r3, w3 = pipe()
	r4, w4 = pipe()
	if out, errs, code := c.runExtra([]*os.File{w3, w4}, "exec", "--preserve-fds", "2", id, "sh", "-c", "echo exec-fd3 >&3; echo exec-fd4 >&4"); code != 0 {
		t.Fatalf("exec --preserve-fds 2: exit %d %s%s", code, out, errs)
	}
	if got := readPipe(t, r3, w3); got != "exec-fd3\n" {
		t.Fatalf("exec wrote %q to fd 3", got)
	}
	if got := readPipe(t, r4, w4); got != "exec-fd4\n" {
		t.Fatalf("exec wrote %q to fd 4", got)
	}
	// Asking for an fd that is not open is an error.
	if _, errs, code := c.run("exec", "--preserve-fds", "5", id, "true"); code == 0 || !strings.Contains(errs, "preserve-fds") {
		t.Fatalf("exec --preserve-fds 5 without open fds: exit %d %q", code, errs)
	}
}

// TestCLIRunJoinUserNamespace runs a container in the foreground that joins
// another container's user and time namespaces by path: its init is forked
// by the nsenter constructor (a new pid namespace inside the joined user
// namespace), and `cryo run` still returns its exit status.
func TestCLIRunJoinUserNamespace(t *testing.T) {
	c := newCLI(t)
	userns := func(dir string, s *specs.Spec) {
		var mounts []specs.Mount
		for _, m := range s.Mounts {
			if m.Type != "cgroup" { // cgroup v1 cannot be mounted from a user namespace
				mounts = append(mounts, m)
			}
		}
		s.Mounts = mounts
		writeSpec(t, dir, s)
		for d := dir; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	dirA, sA := bundle(t, "sleep", "100")
	sA.Linux.Namespaces = append(sA.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace}, specs.LinuxNamespace{Type: specs.TimeNamespace})
	sA.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 410000, Size: 65536}}
	sA.Linux.GIDMappings = sA.Linux.UIDMappings
	sA.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"monotonic": {Secs: 1234567}}
	sA.Linux.CgroupsPath += "-a"
	userns(dirA, sA)
	idA := "cli-join-a"
	c.ok("run", "-d", "--bundle", dirA, idA)
	t.Cleanup(func() { c.run("delete", "-f", idA) })
	pidA := c.state(idA).Pid

	dirB, sB := bundle(t, "sh", "-c", "echo $$; head -1 /proc/self/uid_map; head -1 /proc/self/timens_offsets; exit 6")
	sB.Linux.Namespaces = append(sB.Linux.Namespaces,
		specs.LinuxNamespace{Type: specs.UserNamespace, Path: fmt.Sprintf("/proc/%d/ns/user", pidA)},
		specs.LinuxNamespace{Type: specs.TimeNamespace, Path: fmt.Sprintf("/proc/%d/ns/time", pidA)})
	userns(dirB, sB)
	out, errs, code := c.run("run", "--bundle", dirB, "cli-join-b")
	f := strings.Fields(out)
	if code != 6 || len(f) != 7 || f[0] != "1" || f[2] != "410000" || f[4] != "monotonic" || f[5] != "1234567" {
		t.Fatalf("run joining A's user and time namespaces: exit %d stdout %q stderr %q, want exit 6, pid 1, A's mapping and offset", code, out, errs)
	}
	if out := c.ok("list", "-q"); out != idA+"\n" {
		t.Fatalf("containers after run: %q", out)
	}
}
