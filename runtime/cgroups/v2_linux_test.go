package cgroups

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/integration/testutil"
)

// newV2Manager returns a manager that uses the v2 hierarchy only. On a pure
// v2 host that is what New gives; on a hybrid host it exercises the v2 code
// (cgroup.freeze, cgroup.kill, eBPF devices) against the cgroup2 mount,
// which has no controllers but all of those.
func newV2Manager(t *testing.T) *manager {
	t.Helper()
	testutil.RequiresRoot(t)
	h, err := detectHierarchies()
	if err != nil {
		t.Fatal(err)
	}
	if h.v2 == "" {
		testutil.SkipOrFail(t, "no cgroup2 hierarchy mounted")
	}
	p := testPath(t)
	m := &manager{path: p, mode: Unified, v1: map[string]string{}, v2: filepath.Join(h.v2, p), v2root: h.v2}
	if err := m.create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupManager(t, m) })
	return m
}

func TestV2FreezeThaw(t *testing.T) {
	testFreezeThaw(t, newV2Manager(t))
}

func TestV2PidsKillDelete(t *testing.T) {
	testPidsKillDelete(t, newV2Manager(t))
}

func TestV2Devices(t *testing.T) {
	m := newV2Manager(t)
	run := func() string {
		t.Helper()
		cmd, release, out := startProcOut(t, `if echo x >/dev/null; then echo null-w; else echo no-null-w; fi; if cat /dev/null; then echo null-r; else echo no-null-r; fi; head -c 3 /dev/zero | wc -c`)
		if err := m.Apply(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		release()
		b, err := io.ReadAll(out)
		if err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		return strings.Join(strings.Fields(string(b)), " ")
	}
	zero := []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: i64(1), Minor: i64(5), Access: "rw"},  // /dev/zero
		{Allow: true, Type: "c", Major: i64(1), Minor: i64(3), Access: "rwm"}, // /dev/null
		{Allow: false, Type: "c", Major: i64(1), Minor: i64(3), Access: "w"},
	}
	if err := m.Set(&specs.LinuxResources{Devices: zero}); err != nil {
		t.Fatal(err)
	}
	if got, want := run(), "no-null-w null-r 3"; got != want {
		t.Fatalf("with /dev/zero and a read-only /dev/null: got %q, want %q", got, want)
	}
	// An update replaces the program: with every device allowed /dev/null
	// opens again, which it would not if the first program stayed attached.
	if err := m.Set(&specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}); err != nil {
		t.Fatal(err)
	}
	if got, want := run(), "null-w null-r 3"; got != want {
		t.Fatalf("after allowing all: got %q, want %q", got, want)
	}
}

func TestV2StateAndStats(t *testing.T) {
	m := newV2Manager(t)
	if s, err := m.State(); err != nil || s != Thawed {
		t.Fatalf("got %v %v, want THAWED", s, err)
	}
	cmd, release := startProc(t, "exec sleep 60")
	if err := m.Apply(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	st, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.V2 == nil || st.V2.CPU == nil {
		t.Fatalf("no v2 cpu stats: %+v", st)
	}
}

func TestWatchMemoryEvents(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "memory.events")
	// Rewritten in place, never truncated, as the kernel's file is never
	// seen empty: a truncating write could be read as oom_kill 0, and its
	// content then as a kill.
	write := func(s string) {
		t.Helper()
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte(s), 0); err != nil {
			t.Fatal(err)
		}
	}
	write("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := watchMemoryEvents(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	// A change that is not an OOM kill is not reported; the next kill is.
	write("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
	write("low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\n")
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no event for oom_kill 1 -> 2")
	}
	select {
	case <-ch:
		t.Fatal("an event too many")
	case <-time.After(50 * time.Millisecond):
	}
	// The file going away (the cgroup removed) ends the stream.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("event after removal")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after the file was removed")
	}

	// Cancelling the context ends it too.
	write("oom_kill 0\n")
	ctx2, cancel2 := context.WithCancel(context.Background())
	ch2, err := watchMemoryEvents(ctx2, file)
	if err != nil {
		t.Fatal(err)
	}
	cancel2()
	select {
	case _, ok := <-ch2:
		if ok {
			t.Fatal("unexpected event")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after cancel")
	}
}
