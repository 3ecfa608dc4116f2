package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/testutil"
)

// TestRestoreTimeNamespace restores a task into a time namespace whose
// offsets come from RestoreTimeOffsets: CLOCK_MONOTONIC and CLOCK_BOOTTIME
// go on from their values at dump time, hiding a one-second downtime.
func TestRestoreTimeNamespace(t *testing.T) {
	testutil.RequiresRoot(t)
	bin, helper := buildC(t, "clock"), buildC(t, "timens_exec")
	dir := t.TempDir()
	status := filepath.Join(dir, "status")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, status)
	waitFor(t, "clock to run", func() bool { v, ok := readInts(status, 3); return ok && v[2] > 10 })
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	before, _ := readInts(status, 3)
	time.Sleep(time.Second) // the downtime the namespace must hide

	stubPath := filepath.Join(dir, "stub")
	if err := os.WriteFile(stubPath, Stub(), 0o700); err != nil {
		t.Fatal(err)
	}
	off, err := RestoreTimeOffsets(img)
	if err != nil {
		t.Fatal(err)
	}
	stub := startInNewPidns(t, nil, helper, strconv.FormatInt(int64(off.Monotonic), 10), strconv.FormatInt(int64(off.Boottime), 10), stubPath)
	waitFor(t, "the stub to run in its time namespace", func() bool {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", stub.Process.Pid))
		return err == nil && exe == stubPath
	})
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	var after []int64
	waitFor(t, "the restored clock to tick", func() bool {
		v, ok := readInts(status, 3)
		after = v
		return ok && v[2] > before[2]
	})
	for i, name := range []string{"monotonic", "boottime"} {
		gap := time.Duration(after[i] - before[i])
		if gap < 0 || gap > 500*time.Millisecond {
			t.Errorf("CLOCK_%s moved by %v across a 1s downtime, want < 500ms", name, gap)
		}
	}
}
