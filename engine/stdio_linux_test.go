package engine

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/testutil"
)

// readLines reads lines from r until stop returns true for one.
func readLines(t *testing.T, r *bufio.Reader, stop func(line string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stdout: %v", err)
		}
		if stop(strings.TrimSpace(line)) {
			return
		}
	}
	t.Fatal("timed out reading stdout")
}

func tickOf(line string) int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(line, "tick "), 10, 64)
	return n
}

// TestRestoreStdio dumps a process whose stdin and stdout are pipes from
// outside the tree, and restores it with other pipes (RestoreOptions.Stdio).
func TestRestoreStdio(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "echo")
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	defer inW.Close()
	defer outR.Close()
	cmd := exec.Command(bin)
	cmd.Stdin, cmd.Stdout = inR, outW
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	out := bufio.NewReader(outR)
	var last int64
	readLines(t, out, func(l string) bool { last = tickOf(l); return last >= 100 })
	img := filepath.Join(t.TempDir(), "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()

	in2R, in2W, _ := os.Pipe()
	out2R, out2W, _ := os.Pipe()
	defer in2W.Close()
	defer out2R.Close()
	stub := startStub(t)
	_, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid, Stdio: [3]*os.File{in2R, out2W, nil}})
	in2R.Close()
	out2W.Close()
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	out2 := bufio.NewReader(out2R)
	var first int64
	readLines(t, out2, func(l string) bool { first = tickOf(l); return first > 0 })
	if first <= last-20 || first > last+1000 {
		t.Fatalf("first tick after restore %d, last before dump %d", first, last)
	}
	if _, err := in2W.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	readLines(t, out2, func(l string) bool { return l == "got hello" })
}
