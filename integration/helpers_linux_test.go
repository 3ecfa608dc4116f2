package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/internal/harness"
)

// rt is a runtime under test: the runc shim (baseline) or ours.
type rt struct {
	name    string // short name used in container ids
	runtime string // containerd runtime type
}

var (
	runcRT = rt{name: "runc", runtime: "io.containerd.runc.v2"}
	cryoRT = rt{name: "cryo", runtime: "io.containerd.cryo.v2"}
)

// runtimes are the runtimes every common scenario runs on.
var runtimes = []rt{runcRT, cryoRT}

// forEachRuntime runs f as a subtest per runtime.
func forEachRuntime(t *testing.T, f func(t *testing.T, r rt)) {
	for _, r := range runtimes {
		t.Run(r.name, func(t *testing.T) { f(t, r) })
	}
}

// runFlags are the ctr run flags that select the runtime and keep its files private.
func (r rt) runFlags(d *harness.Daemon) []string {
	flags := []string{"--runtime", r.runtime, "--snapshotter", d.Snapshotter, "--fifo-dir", d.FifoDir()}
	if r.runtime == runcRT.runtime {
		flags = append(flags, "--runc-root", d.RuncRoot())
	}
	return flags
}

// containerID returns a container id unique within the daemon for this test and runtime.
func containerID(t *testing.T, r rt, suffix string) string {
	name := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
	return strings.ToLower(fmt.Sprintf("%s-%s-%s", r.name, name, suffix))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// mustCtr runs ctr and fails the test on error, returning stdout.
func mustCtr(t *testing.T, d *harness.Daemon, args ...string) string {
	t.Helper()
	out, err := d.Ctr(testCtx(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ctrResult runs ctr and returns stdout, stderr and the exit code (-1 when it did not exit).
func ctrResult(t *testing.T, d *harness.Daemon, args ...string) (string, string, int) {
	t.Helper()
	cmd := d.CtrCmd(testCtx(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	default:
		t.Fatalf("ctr %s: %v", strings.Join(args, " "), err)
		return "", "", -1
	}
}

// runDetached starts `ctr run -d` of busybox with args as the container's command and removes
// the container (task killed first) at the end of the test.
func runDetached(t *testing.T, d *harness.Daemon, r rt, id string, extra []string, args ...string) {
	t.Helper()
	a := append([]string{"run", "-d"}, r.runFlags(d)...)
	a = append(a, extra...)
	a = append(a, busybox, id)
	mustCtr(t, d, append(a, args...)...)
	t.Cleanup(func() { removeContainer(t, d, id) })
}

// removeContainer deletes the task (forcefully) and the container if they still exist.
func removeContainer(t *testing.T, d *harness.Daemon, id string) {
	// bounded: a task that cannot be removed fails the test instead of hanging the run
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if tasks, err := d.Ctr(ctx, "tasks", "ls", "-q"); err == nil && slices.Contains(strings.Fields(tasks), id) {
		if _, err := d.Ctr(ctx, "tasks", "rm", "-f", id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if ctrs, err := d.Ctr(ctx, "containers", "ls", "-q"); err == nil && slices.Contains(strings.Fields(ctrs), id) {
		if _, err := d.Ctr(ctx, "containers", "rm", id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

// taskInfo is one line of `ctr tasks ls`.
type taskInfo struct {
	pid    int
	status string
}

func task(t *testing.T, d *harness.Daemon, id string) (taskInfo, bool) {
	t.Helper()
	out := mustCtr(t, d, "tasks", "ls")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == id {
			pid, _ := strconv.Atoi(f[1])
			return taskInfo{pid: pid, status: f[2]}, true
		}
	}
	return taskInfo{}, false
}

// waitStatus polls `ctr tasks ls` until the task has the status (ctr has no wait command).
func waitStatus(t *testing.T, d *harness.Daemon, id, status string) taskInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ti, ok := task(t, d, id)
		if ok && ti.status == status {
			return ti
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: got status %q (exists %v), want %s", id, ti.status, ok, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitOutput polls f until it returns want or the deadline passes.
func waitOutput(t *testing.T, what string, want string, f func() (string, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got string
	var err error
	for time.Now().Before(deadline) {
		got, err = f()
		if err == nil && strings.TrimSpace(got) == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: got %q (err %v), want %q", what, strings.TrimSpace(got), err, want)
}

// shimOf returns the PID of the shim serving container id on d (-id ID in its command line).
func shimOf(t *testing.T, d *harness.Daemon, id string) int {
	t.Helper()
	for _, pid := range d.ShimPids() {
		if slices.Contains(harness.Cmdline(pid), id) {
			return pid
		}
	}
	return 0
}
