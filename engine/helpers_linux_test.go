package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// buildC compiles testdata/<name>.c statically at -O0 and returns the binary.
func buildC(t testing.TB, name string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatalf("gcc is needed to build the test workloads: %v", err)
	}
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("gcc", "-static", "-O0", "-o", out, filepath.Join("testdata", name+".c"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", name, err, b)
	}
	return out
}

// cgroupFreezer is the engine tests' Freezer: a cgroup2 directory under
// /sys/fs/cgroup/unified (hybrid hosts) or /sys/fs/cgroup (pure v2).
type cgroupFreezer struct {
	dir string
}

func newCgroupFreezer(t testing.TB) *cgroupFreezer {
	t.Helper()
	root := "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		root = "/sys/fs/cgroup"
	}
	name := strings.NewReplacer("/", "-", " ", "-").Replace(fmt.Sprintf("engine-%s-%d", t.Name(), os.Getpid()))
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	f := &cgroupFreezer{dir: dir}
	t.Cleanup(func() {
		_ = f.Thaw()
		_ = f.killAll()
		for i := 0; i < 200; i++ {
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("remove cgroup %s", dir)
	})
	return f
}

func (f *cgroupFreezer) killAll() error {
	return os.WriteFile(filepath.Join(f.dir, "cgroup.kill"), []byte("1"), 0)
}

func (f *cgroupFreezer) set(v string) error {
	if err := os.WriteFile(filepath.Join(f.dir, "cgroup.freeze"), []byte(v), 0); err != nil {
		return err
	}
	want := "frozen " + v
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(filepath.Join(f.dir, "cgroup.events"))
		if err != nil {
			return err
		}
		if strings.Contains(string(data), want) {
			return nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return fmt.Errorf("cgroup %s: no %q after 5s", f.dir, want)
}

func (f *cgroupFreezer) Freeze() error { return f.set("1") }
func (f *cgroupFreezer) Thaw() error   { return f.set("0") }

// v1Freezer is the engine tests' Freezer on the cgroup v1 freezer
// controller (hybrid hosts): tasks frozen by it report ptrace stops only
// once thawed, which the engine's freeze/seize/thaw/wait order handles.
type v1Freezer struct {
	dir string
}

func newV1Freezer(t testing.TB) *v1Freezer {
	t.Helper()
	root := "/sys/fs/cgroup/freezer"
	if _, err := os.Stat(filepath.Join(root, "tasks")); err != nil {
		testutil.SkipOrFail(t, "no cgroup v1 freezer on this host (pure cgroup v2)")
	}
	name := strings.NewReplacer("/", "-", " ", "-").Replace(fmt.Sprintf("engine-%s-%d", t.Name(), os.Getpid()))
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	f := &v1Freezer{dir: dir}
	t.Cleanup(func() {
		_ = f.Thaw()
		data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, p := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(p); err == nil {
				_ = unix.Kill(n, unix.SIGKILL)
			}
		}
		for i := 0; i < 200; i++ {
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("remove cgroup %s", dir)
	})
	return f
}

func (f *v1Freezer) set(v string) error {
	if err := os.WriteFile(filepath.Join(f.dir, "freezer.state"), []byte(v), 0); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(filepath.Join(f.dir, "freezer.state"))
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(data)) == v {
			return nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return fmt.Errorf("cgroup %s: not %s after 5s", f.dir, v)
}

func (f *v1Freezer) Freeze() error { return f.set("FROZEN") }
func (f *v1Freezer) Thaw() error   { return f.set("THAWED") }

// wrap returns argv run through a shell that first joins the cgroup (the
// shell is PID 1 of its namespace, so "0" names itself) and then execs argv.
func (f *v1Freezer) wrap(argv ...string) []string {
	script := fmt.Sprintf("echo 0 > %s/cgroup.procs && exec \"$@\"", f.dir)
	return append([]string{"/bin/sh", "-c", script, "sh"}, argv...)
}

// fd opens the cgroup directory for SysProcAttr.CgroupFD.
func (f *cgroupFreezer) fd(t testing.TB) int {
	fd, err := unix.Open(f.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// startInNewPidns starts argv as PID 1 of a new PID and mount namespace,
// inside the cgroup of fz when it is not nil.
func startInNewPidns(t testing.TB, fz *cgroupFreezer, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if fz != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fz.fd(t)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// startStub starts the engine's stub as PID 1 of a fresh PID+mount namespace.
func startStub(t testing.TB) *exec.Cmd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stub")
	if err := os.WriteFile(path, Stub(), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := startInNewPidns(t, nil, path)
	// The stub is ready once it runs its own code (not the Go child anymore).
	waitFor(t, "stub exec", func() bool {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
		return err == nil && exe == path
	})
	return cmd
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// counterStatus is one line of testdata/counter.c's status file.
type counterStatus struct {
	Counter int64
	OK      int
	Off     int64
	Pid     int
}

func readCounter(t testing.TB, path string) (counterStatus, bool) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		return counterStatus{}, false
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) != 4 {
		return counterStatus{}, false
	}
	var s counterStatus
	var e1, e2, e3, e4 error
	s.Counter, e1 = strconv.ParseInt(f[0], 10, 64)
	s.OK, e2 = strconv.Atoi(f[1])
	s.Off, e3 = strconv.ParseInt(f[2], 10, 64)
	s.Pid, e4 = strconv.Atoi(f[3])
	if e1 != nil || e2 != nil || e3 != nil || e4 != nil {
		return counterStatus{}, false
	}
	return s, true
}

func tracerPid(t testing.TB, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatalf("no TracerPid in /proc/%d/status", pid)
	return 0
}
