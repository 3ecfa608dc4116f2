package integration

import (
	"strconv"
	"strings"
	"testing"
)

// loop is a container command that runs until SIGTERM and then exits 42: a shell as PID 1
// ignores signals it has no trap for, so the trap is what makes SIGTERM observable.
const loop = `trap 'exit 42' TERM; echo started; while :; do sleep 0.05; done`

// TestRunExecKillRm runs a container detached, execs into it (stdout, stderr, exit code), lists
// its processes, stops it with SIGTERM (exit status 42 through its trap), then removes the task
// and the container and checks that the shim is gone.
func TestRunExecKillRm(t *testing.T) {
	d := sharedDaemon(t)
	forEachRuntime(t, func(t *testing.T, r rt) {
		id := containerID(t, r, "c")
		runDetached(t, d, r, id, nil, "sh", "-c", loop)
		ti := waitStatus(t, d, id, "RUNNING")
		if ti.pid <= 0 {
			t.Fatalf("task pid %d", ti.pid)
		}
		shim := shimOf(t, d, id)
		if shim == 0 {
			t.Fatalf("no shim with -id %s serving %s", id, d.Address)
		}

		stdout, stderr, code := ctrResult(t, d, "tasks", "exec", "--fifo-dir", d.FifoDir(), "--exec-id", "e1", id,
			"sh", "-c", "echo out; echo err >&2; exit 3")
		if stdout != "out\n" || stderr != "err\n" || code != 3 {
			t.Fatalf("exec: got stdout %q stderr %q code %d, want %q %q 3", stdout, stderr, code, "out\n", "err\n")
		}
		// the exec sees the container's pid namespace: the loop shell is PID 1
		stdout, _, code = ctrResult(t, d, "tasks", "exec", "--fifo-dir", d.FifoDir(), "--exec-id", "e2", id,
			"cat", "/proc/1/cmdline")
		if code != 0 || !strings.HasPrefix(stdout, "sh\x00-c\x00trap") {
			t.Fatalf("exec cat /proc/1/cmdline: got %q code %d", stdout, code)
		}

		ps := mustCtr(t, d, "tasks", "ps", id)
		if !strings.Contains(ps, strconv.Itoa(ti.pid)) {
			t.Fatalf("ctr tasks ps %s does not list init pid %d:\n%s", id, ti.pid, ps)
		}

		mustCtr(t, d, "tasks", "kill", id) // SIGTERM
		waitStatus(t, d, id, "STOPPED")
		// ctr reports a non-zero exit status of the deleted task as a warning
		if _, stderr, code := ctrResult(t, d, "tasks", "rm", id); code != 0 || !strings.Contains(stderr, "exit code 42") {
			t.Fatalf("ctr tasks rm: code %d stderr %q, want exit code 42 reported", code, stderr)
		}
		mustCtr(t, d, "containers", "rm", id)
		if _, ok := task(t, d, id); ok {
			t.Fatalf("task %s still listed after rm", id)
		}
		waitOutput(t, "shim of "+id+" after rm", "gone", func() (string, error) {
			if shimOf(t, d, id) == 0 {
				return "gone", nil
			}
			return "running", nil
		})
	})
}

// TestRunRm runs a container in the foreground with --rm: ctr's exit code is the container's,
// stdout and stderr arrive separately, and nothing is left behind.
func TestRunRm(t *testing.T) {
	d := sharedDaemon(t)
	forEachRuntime(t, func(t *testing.T, r rt) {
		id := containerID(t, r, "c")
		args := append([]string{"run", "--rm"}, r.runFlags(d)...)
		args = append(args, busybox, id, "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7")
		stdout, stderr, code := ctrResult(t, d, args...)
		if code != 7 || stdout != "to-stdout\n" || !strings.Contains(stderr, "to-stderr\n") {
			t.Fatalf("got code %d stdout %q stderr %q, want 7 %q %q", code, stdout, stderr, "to-stdout\n", "to-stderr\n")
		}
		if ctrs := mustCtr(t, d, "containers", "ls", "-q"); strings.Contains(ctrs, id) {
			t.Fatalf("container %s left after --rm", id)
		}
	})
}
