package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/console"

	"github.com/cryo-run/cryo/integration/internal/harness"
)

// counterLoop writes an increasing counter to /tmp/c every 20 ms.
const counterLoop = `trap 'exit 42' TERM; i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; sleep 0.02; done`

// readCounter reads the container's /tmp/c from the host through /proc/<init>/root, which works
// even while the container is frozen.
func readCounter(t *testing.T, pid int) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/tmp/c", pid))
		if err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond) // the file is being rewritten
	}
	t.Fatalf("no counter in /proc/%d/root/tmp/c", pid)
	return 0
}

// waitCounterAbove polls until the counter passes n.
func waitCounterAbove(t *testing.T, pid, n int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if v := readCounter(t, pid); v > n {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("counter did not pass %d", n)
	return 0
}

// TestPauseResumePsMetrics freezes a running container (its counter stops, the task is
// PAUSED), thaws it (the counter continues), lists its processes with an exec running beside
// the init, and reads its cgroup metrics.
func TestPauseResumePsMetrics(t *testing.T) {
	d := sharedDaemon(t)
	forEachRuntime(t, func(t *testing.T, r rt) {
		id := containerID(t, r, "c")
		runDetached(t, d, r, id, nil, "sh", "-c", counterLoop)
		ti := waitStatus(t, d, id, "RUNNING")
		n := waitCounterAbove(t, ti.pid, 0)

		mustCtr(t, d, "tasks", "pause", id)
		waitStatus(t, d, id, "PAUSED")
		frozen := readCounter(t, ti.pid)
		if frozen < n {
			t.Fatalf("counter went back from %d to %d", n, frozen)
		}
		time.Sleep(200 * time.Millisecond) // ten loop iterations, were it running
		if v := readCounter(t, ti.pid); v != frozen {
			t.Fatalf("counter moved from %d to %d while paused", frozen, v)
		}
		mustCtr(t, d, "tasks", "resume", id)
		waitStatus(t, d, id, "RUNNING")
		waitCounterAbove(t, ti.pid, frozen)

		// an exec beside the init shows up in ps
		mustCtr(t, d, "tasks", "exec", "-d", "--fifo-dir", d.FifoDir(), "--exec-id", "sleeper", id, "sleep", "30")
		var ps string
		waitOutput(t, "ps lists the exec", "yes", func() (string, error) {
			ps = mustCtr(t, d, "tasks", "ps", id)
			if strings.Contains(ps, "sleeper") && strings.Contains(ps, strconv.Itoa(ti.pid)) {
				return "yes", nil
			}
			return ps, nil
		})

		metrics := mustCtr(t, d, "tasks", "metrics", id)
		mem := metricValue(metrics, "memory.usage_in_bytes", "memory.usage")
		pids := metricValue(metrics, "pids.current")
		if mem <= 0 || pids < 2 {
			t.Fatalf("metrics: memory usage %d, pids %d (want > 0, >= 2):\n%s", mem, pids, metrics)
		}
	})
}

// metricValue returns the value of the first of names in `ctr tasks metrics` output (-1: none).
func metricValue(out string, names ...string) int64 {
	for _, name := range names {
		s := bufio.NewScanner(strings.NewReader(out))
		for s.Scan() {
			f := strings.Fields(s.Text())
			if len(f) >= 2 && f[0] == name {
				v, err := strconv.ParseInt(f[1], 10, 64)
				if err == nil {
					return v
				}
			}
		}
	}
	return -1
}

// TestExitCodes checks that a container's exit status reaches ctr: plain exits and death by
// signal (128+n).
func TestExitCodes(t *testing.T) {
	d := sharedDaemon(t)
	forEachRuntime(t, func(t *testing.T, r rt) {
		for i, tc := range []struct {
			script string
			want   int
		}{
			{"exit 0", 0},
			{"exit 1", 1},
			{"exit 123", 123},
			// the shell reports its child's death by signal as 128+n
			{`sh -c 'kill -SEGV $$'; exit $?`, 139},
		} {
			id := containerID(t, r, strconv.Itoa(i))
			args := append([]string{"run", "--rm"}, r.runFlags(d)...)
			_, stderr, code := ctrResult(t, d, append(args, busybox, id, "sh", "-c", tc.script)...)
			if code != tc.want {
				t.Errorf("%q: got exit code %d, want %d (stderr %q)", tc.script, code, tc.want, stderr)
			}
			removeContainer(t, d, id)
		}
		// SIGKILL of the init from outside: 128+9 (PID 1 cannot be killed from inside)
		id := containerID(t, r, "kill")
		runDetached(t, d, r, id, nil, "sleep", "60")
		waitStatus(t, d, id, "RUNNING")
		mustCtr(t, d, "tasks", "kill", "-s", "SIGKILL", id)
		waitStatus(t, d, id, "STOPPED")
		if _, stderr, _ := ctrResult(t, d, "tasks", "rm", id); !strings.Contains(stderr, "exit code 137") {
			t.Errorf("SIGKILL of init: ctr tasks rm stderr %q, want exit code 137", stderr)
		}
	})
}

// runOnPty runs cmd with a fresh pty as its stdin, stdout and stderr (ctr -t needs a
// terminal) and returns what it printed and its exit code.
func runOnPty(t *testing.T, cmdArgs func() (string, []string), d *harness.Daemon) (string, int) {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := master.Resize(console.WinSize{Height: 37, Width: 91}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, args := cmdArgs()
	cmd := d.CtrCmd(testCtx(t), args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&out, master); close(done) }()
	err = cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	// the copy ends with EIO once ctr (the last holder of the slave) has exited
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("pty output did not end; so far %q (ctr: %v)", out.String(), err)
	}
	return out.String(), code
}

// TestTerminal runs a container with a terminal (ctr run -t) and an exec with one (ctr tasks
// exec -t): the process sees a tty of the size of ctr's terminal, its output comes through, and
// its exit code too.
func TestTerminal(t *testing.T) {
	d := sharedDaemon(t)
	forEachRuntime(t, func(t *testing.T, r rt) {
		id := containerID(t, r, "c")
		out, code := runOnPty(t, func() (string, []string) {
			args := append([]string{"run", "--rm", "-t"}, r.runFlags(d)...)
			return "", append(args, busybox, id, "sh", "-c", "tty; exit 5")
		}, d)
		removeContainer(t, d, id)
		if code != 5 || !strings.Contains(out, "/dev/pts/") {
			t.Fatalf("ctr run -t: code %d output %q, want 5 and a tty", code, out)
		}

		id = containerID(t, r, "e")
		runDetached(t, d, r, id, nil, "sh", "-c", loop)
		waitStatus(t, d, id, "RUNNING")
		out, code = runOnPty(t, func() (string, []string) {
			return "", []string{"tasks", "exec", "-t", "--fifo-dir", d.FifoDir(), "--exec-id", "t1", id, "sh", "-c", "tty; exit 6"}
		}, d)
		if code != 6 || !strings.Contains(out, "/dev/pts/") {
			t.Fatalf("ctr tasks exec -t: code %d output %q, want 6 and a tty", code, out)
		}
	})
}

// TestContainerdRestart stops containerd while a task runs, starts it again on the same root
// and state, and checks that the task is still there, still served by the same shim, and can
// be exec'd into, killed and removed.
func TestContainerdRestart(t *testing.T) {
	d := newDaemon(t, "restart")
	forEachRuntime(t, func(t *testing.T, r rt) {
		id := containerID(t, r, "c")
		runDetached(t, d, r, id, nil, "sh", "-c", counterLoop)
		before := waitStatus(t, d, id, "RUNNING")
		shim := shimOf(t, d, id)
		n := waitCounterAbove(t, before.pid, 0)

		if err := d.Restart(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		after := waitStatus(t, d, id, "RUNNING")
		if after.pid != before.pid || shimOf(t, d, id) != shim {
			t.Fatalf("after restart: pid %d shim %d, want %d %d", after.pid, shimOf(t, d, id), before.pid, shim)
		}
		waitCounterAbove(t, after.pid, n)
		stdout, _, code := ctrResult(t, d, "tasks", "exec", "--fifo-dir", d.FifoDir(), "--exec-id", "e1", id, "sh", "-c", "echo $((40+2))")
		if code != 0 || stdout != "42\n" {
			t.Fatalf("exec after restart: code %d stdout %q", code, stdout)
		}
		mustCtr(t, d, "tasks", "kill", id)
		waitStatus(t, d, id, "STOPPED")
		mustCtr(t, d, "tasks", "rm", id)
		mustCtr(t, d, "containers", "rm", id)
	})
}

// TestNerdctl drives the daemon with nerdctl: run -d --network none, exec, logs (through the
// binary:// logging driver, nerdctl itself), update, stop (SIGTERM, exit 42 via the trap), rm -f.
func TestNerdctl(t *testing.T) {
	d := sharedDaemon(t)
	ctx := testCtx(t)
	forEachRuntime(t, func(t *testing.T, r rt) {
		name := containerID(t, r, "n")
		nerd := func(args ...string) string {
			t.Helper()
			out, err := d.Nerdctl(ctx, args...)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		t.Cleanup(func() { d.Nerdctl(ctx, "rm", "-f", name) })
		id := strings.TrimSpace(nerd("run", "-d", "--runtime", r.runtime, "--network", "none", "--name", name, busybox,
			"sh", "-c", "echo hello-from-"+r.name+"; echo err-line >&2; "+loop))
		waitStatus(t, d, id, "RUNNING")
		if out := nerd("exec", name, "sh", "-c", "echo exec-$((6*7))"); out != "exec-42\n" {
			t.Fatalf("nerdctl exec: got %q, want %q", out, "exec-42\n")
		}
		waitOutput(t, "nerdctl logs", "hello-from-"+r.name, func() (string, error) {
			out, err := d.Nerdctl(ctx, "logs", name)
			return strings.Split(out, "\n")[0], err
		})
		nerd("update", "--memory", "64m", name)
		if lim := cgroupMemoryLimit(t, d, id); lim != 64<<20 {
			t.Fatalf("memory limit after nerdctl update: %d, want %d", lim, 64<<20)
		}
		nerd("stop", name)
		ps := nerd("ps", "-a", "--format", "{{.Names}} {{.Status}}")
		if !strings.Contains(ps, name+" Exited (42)") {
			t.Fatalf("nerdctl ps -a after stop: %q, want %s Exited (42)", ps, name)
		}
		nerd("rm", "-f", name)
		if out := nerd("ps", "-a", "-q"); strings.Contains(out, name) {
			t.Fatalf("container %s left after rm -f", name)
		}
	})
}

// cgroupMemoryLimit reads the memory limit of the container's init from its cgroup (v1
// memory controller, or v2 memory.max).
func cgroupMemoryLimit(t *testing.T, d *harness.Daemon, id string) int64 {
	t.Helper()
	ti, ok := task(t, d, id)
	if !ok {
		t.Fatalf("no task %s", id)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", ti.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var file string
		switch {
		case strings.Contains(","+parts[1]+",", ",memory,"):
			file = filepath.Join("/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes")
		case parts[0] == "0" && !isHybrid():
			file = filepath.Join("/sys/fs/cgroup", parts[2], "memory.max")
		default:
			continue
		}
		v, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			t.Fatalf("%s: %q", file, v)
		}
		return n
	}
	t.Fatalf("no memory cgroup for pid %d:\n%s", ti.pid, data)
	return 0
}

func isHybrid() bool {
	_, err := os.Stat("/sys/fs/cgroup/memory")
	return err == nil
}
