package engine

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cryo-run/cryo/integration/testutil"
)

// startInNamespaces is startInNewPidns with more namespaces (extra clone flags).
func startInNamespaces(t testing.TB, fz *cgroupFreezer, extra uintptr, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | extra, Pdeathsig: syscall.SIGKILL}
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

func readSysvCount(path string) (n int64, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return -1, false
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return -1, false
	}
	n, _ = strconv.ParseInt(f[0], 10, 64)
	return n, f[1] == "1"
}

// TestDumpRestoreSysVIPC checkpoints a program of its own IPC namespace
// attached to a System V segment, with a message queue holding messages and
// a semaphore set: after restore the segment is at the same address with
// its pattern, the messages arrive in order, the values are kept and the
// ids are the same.
func TestDumpRestoreSysVIPC(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "sysv")
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	fz := newCgroupFreezer(t)
	cmd := startInNamespaces(t, fz, syscall.CLONE_NEWIPC, bin, dir)
	waitFor(t, "the program to count", func() bool { n, ok := readSysvCount(count); return ok && n > 20 })
	data, err := os.ReadFile(filepath.Join(dir, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	var shm, msq, sem int
	var addr uint64
	if _, err := fmt.Sscan(string(data), &shm, &msq, &sem, &addr); err != nil {
		t.Fatalf("ids %q: %v", data, err)
	}
	if shm == 0 || msq == 0 || sem == 0 {
		t.Fatalf("ids %q: want ids past the first ones", data)
	}
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	n0, _ := readSysvCount(count)
	stubPath := filepath.Join(t.TempDir(), "stub")
	if err := os.WriteFile(stubPath, Stub(), 0o700); err != nil {
		t.Fatal(err)
	}
	stub := startInNamespaces(t, nil, syscall.CLONE_NEWIPC, stubPath)
	waitFor(t, "stub exec", func() bool {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", stub.Process.Pid))
		return err == nil && exe == stubPath
	})
	res, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	pid := res.Pids[1]
	var n1 int64
	waitFor(t, "the restored program to count on with its pattern intact", func() bool {
		var ok bool
		n1, ok = readSysvCount(count)
		return ok && n1 > n0+20
	})
	// The count lives in the segment: it went on from its saved value.
	if n1 > n0+5000 {
		t.Errorf("count jumped: %d -> %d", n0, n1)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x-%x rw-s 00000000 00:01 %d", addr, addr+3*4096, shm)
	if !strings.Contains(string(maps), want) || !strings.Contains(string(maps), "/SYSV00001234") {
		t.Errorf("restored maps lack %q (/SYSV00001234):\n%s", want, maps)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var result []byte
	waitFor(t, "the result", func() bool {
		result, err = os.ReadFile(filepath.Join(dir, "result"))
		return err == nil
	})
	wantRes := fmt.Sprintf("%d %d %d|1:msg-one 2:msg-two 3:msg-three |3 0 7\n", shm, msq, sem)
	if string(result) != wantRes {
		t.Errorf("result %q, want %q", result, wantRes)
	}
}
