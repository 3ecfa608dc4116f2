package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryo-run/cryo/engine"
)

// buildEngineWorkload builds one of the engine's C test workloads
// (engine/testdata/<name>.c) statically, for a busybox rootfs.
func buildEngineWorkload(t *testing.T, name string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatalf("gcc is needed to build the test workloads: %v", err)
	}
	out := filepath.Join(t.TempDir(), name)
	if b, err := exec.Command("gcc", "-static", "-O0", "-o", out, filepath.Join("..", "engine", "testdata", name+".c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", name, err, b)
	}
	return out
}

func (w *workload) waitFile(name string) []byte {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(w.rootfs, "tmp", name)); err == nil {
			return b
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.t.Fatalf("no /tmp/%s in the container", name)
	return nil
}

// TestWorkloadSysVIPC checkpoints a container (which has its own IPC
// namespace, from the bundle) holding a System V segment, queue and
// semaphore set, and restores it: same ids, contents, messages and values.
func TestWorkloadSysVIPC(t *testing.T) {
	bin := buildEngineWorkload(t, "sysv")
	w := newBusyboxWorkload(t, "/sysv", "/tmp")
	w.install(bin, "sysv", 0o755)
	if err := os.MkdirAll(filepath.Join(w.rootfs, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	w.start()
	w.waitInts("count", 2, 2, func(v []int64) bool { return v[0] > 20 && v[1] == 1 })
	ids := strings.Fields(string(w.waitFile("ids")))
	image := w.checkpoint(CheckpointOpts{})
	saved, _ := w.ints("count", 1, 2)
	w.restore(image)
	w.waitInts("count", 2, 2, func(v []int64) bool { return v[0] > saved[0]+20 && v[1] == 1 })
	if err := os.WriteFile(filepath.Join(w.rootfs, "tmp", "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got := string(w.waitFile("result"))
	want := fmt.Sprintf("%s %s %s|1:msg-one 2:msg-two 3:msg-three |3 0 7\n", ids[0], ids[1], ids[2])
	if got != want {
		t.Errorf("result %q, want %q", got, want)
	}
}

// TestWorkloadFileLocks checkpoints a container holding POSIX, OFD and flock
// locks: refused without FileLocks, restored with it.
func TestWorkloadFileLocks(t *testing.T) {
	bin := buildEngineWorkload(t, "locks")
	w := newBusyboxWorkload(t, "/locks", "/tmp")
	w.install(bin, "locks", 0o755)
	if err := os.MkdirAll(filepath.Join(w.rootfs, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	w.start()
	w.waitInts("count", 1, 1, func(v []int64) bool { return v[0] > 20 })
	var a, b, c int
	if _, err := fmt.Sscan(string(w.waitFile("fds")), &a, &b, &c); err != nil {
		t.Fatal(err)
	}
	if _, err := w.c.Checkpoint(t.Context(), CheckpointOpts{ImagePath: filepath.Join(t.TempDir(), "refused")}); !errors.Is(err, engine.ErrUnsupported) {
		t.Fatalf("checkpoint without FileLocks: %v, want a refusal", err)
	}
	image := w.checkpoint(CheckpointOpts{FileLocks: true})
	saved, _ := w.ints("count", 1, 1)
	w.restore(image)
	w.waitInts("count", 1, 1, func(v []int64) bool { return v[0] > saved[0]+20 })
	for fd, want := range map[int]string{a: "POSIX  ADVISORY  WRITE", b: "FLOCK  ADVISORY  WRITE", c: "OFDLCK ADVISORY  WRITE"} {
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", w.c.Pid(), fd))
		if err != nil || !strings.Contains(string(info), want) {
			t.Errorf("restored fd %d: %q (%v), want a %q lock", fd, info, err, want)
		}
	}
}
