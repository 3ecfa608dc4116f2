package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cryo-run/cryo/integration/testutil"
)

// startInNewNetns starts argv as PID 1 of new PID, mount and network
// namespaces (lo down, as a runtime creates them), inside fz when not nil.
func startInNewNetns(t testing.TB, fz *cgroupFreezer, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
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

// startStubNetns starts the stub as PID 1 of fresh PID, mount and network namespaces.
func startStubNetns(t testing.TB) *exec.Cmd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stub")
	if err := os.WriteFile(path, Stub(), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := startInNewNetns(t, nil, path)
	waitFor(t, "stub exec", func() bool {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
		return err == nil && exe == path
	})
	return cmd
}

// readCount reads a "<counter>" status file.
func readCount(dir, role string) (int64, bool) {
	v, ok := readInts(filepath.Join(dir, role), 1)
	if !ok {
		return 0, false
	}
	return v[0], true
}

// waitCounters waits until every role counted past min and returns the counts.
func waitCounters(t *testing.T, dir string, min int64, roles ...string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	waitFor(t, fmt.Sprintf("%v to count past %d", roles, min), func() bool {
		for _, r := range roles {
			n, ok := readCount(dir, r)
			if !ok || n <= min {
				return false
			}
			out[r] = n
		}
		return true
	})
	return out
}

func waitResult(t *testing.T, path string) string {
	t.Helper()
	var res string
	waitFor(t, filepath.Base(path), func() bool {
		data, err := os.ReadFile(path)
		res = strings.TrimSpace(string(data))
		return err == nil && strings.HasSuffix(string(data), "\n")
	})
	return res
}

// dumpAndRestore dumps the tree of cmd (killing it) and restores it into a
// stub in fresh namespaces; it returns the restored root's host PID.
func dumpAndRestore(t *testing.T, fz *cgroupFreezer, cmd *exec.Cmd, dir string, opts DumpOptions) (*DumpResult, *RestoreResult) {
	t.Helper()
	opts.Pid, opts.Freezer, opts.ImageDir = cmd.Process.Pid, fz, filepath.Join(dir, "img")
	res, err := Dump(context.Background(), opts)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	stub := startStubNetns(t)
	rres, err := Restore(context.Background(), RestoreOptions{ImageDir: opts.ImageDir, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, host := range rres.Pids {
		if host != 0 {
			if tp := tracerPid(t, host); tp != 0 {
				t.Errorf("pid %d still traced by %d", host, tp)
			}
		}
	}
	return res, rres
}

// TestUnixSockets checkpoints socketpairs of the three types, path and
// abstract listeners with accepted connections (across two processes) and a
// connection still pending, all with bytes in flight, and checks that every
// byte and message arrives after restore, in order and with its boundaries.
func TestUnixSockets(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "usock")
	dir := t.TempDir()
	fz := newCgroupFreezer(t)
	cmd := startInNewNetns(t, fz, bin, dir)
	waitCounters(t, dir, 20, "root", "child")
	dumpAndRestore(t, fz, cmd, dir, DumpOptions{})
	before := map[string]int64{}
	for _, r := range []string{"root", "child"} {
		before[r], _ = readCount(dir, r)
	}
	after := waitCounters(t, dir, max(before["root"], before["child"])+5, "root", "child")
	for r, n := range after {
		if n > before[r]+10000 {
			t.Errorf("%s: counter jumped from %d to %d", r, before[r], n)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := waitResult(t, filepath.Join(dir, "result-root")), "pair-data|dg1|dg22|seq-msg|to-server|name-ok|abs-data|late|"; got != want {
		t.Errorf("root read %q, want %q", got, want)
	}
	if got, want := waitResult(t, filepath.Join(dir, "result-child")), "to-client|"; got != want {
		t.Errorf("child read %q, want %q", got, want)
	}
}

// TestTCPAndUDP checkpoints, with TCPEstablished, a TCP listener, an
// established connection between two processes of the tree with bytes in
// flight both ways, and a UDP pair with a datagram queued; after restore the
// connection carries on, the queued bytes and datagram arrive (from the same
// sender), socket options are kept and the listener accepts a new connection.
func TestTCPAndUDP(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "tcp")
	dir := t.TempDir()
	fz := newCgroupFreezer(t)
	cmd := startInNewNetns(t, fz, bin, dir)
	waitCounters(t, dir, 20, "root", "child")
	dumpAndRestore(t, fz, cmd, dir, DumpOptions{TCPEstablished: true})
	before := map[string]int64{}
	for _, r := range []string{"root", "child"} {
		before[r], _ = readCount(dir, r)
	}
	waitCounters(t, dir, max(before["root"], before["child"])+5, "root", "child")
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := waitResult(t, filepath.Join(dir, "result-root")), "hello-before|udp-before:from-ok|new-conn|"; got != want {
		t.Errorf("root got %q, want %q", got, want)
	}
	if got, want := waitResult(t, filepath.Join(dir, "result-child")), "srv-before|ack|udp-reply|opts-ok|new-conn|"; got != want {
		t.Errorf("child got %q, want %q", got, want)
	}
}

// TestTCPEstablishedRefused checks that an established connection is refused
// without TCPEstablished, with an error naming the pid, fd and connection,
// and that the tree keeps running, untraced, its connection intact.
func TestTCPEstablishedRefused(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "tcp")
	dir := t.TempDir()
	fz := newCgroupFreezer(t)
	cmd := startInNewNetns(t, fz, bin, dir)
	waitCounters(t, dir, 20, "root", "child")
	_, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: filepath.Join(dir, "img")})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("got %v, want ErrUnsupported", err)
	}
	for _, want := range []string{"pid 1: fd ", "(tcp/ip v4 stream)", "established TCP connection 127.0.0.1:7070 -> 127.0.0.1:", "--tcp-established"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if tp := tracerPid(t, cmd.Process.Pid); tp != 0 {
		t.Fatalf("TracerPid %d after a failed dump", tp)
	}
	now, _ := readCount(dir, "root")
	waitCounters(t, dir, now+5, "root", "child")
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := waitResult(t, filepath.Join(dir, "result-child")), "srv-before|ack|udp-reply|opts-ok|new-conn|"; got != want {
		t.Errorf("child got %q after the refused dump, want %q", got, want)
	}
}
