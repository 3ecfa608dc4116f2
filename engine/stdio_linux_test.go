package engine

import (
	"bufio"
	"context"
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

// openPty returns a new pseudo-terminal master and its slave.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestRestoreControllingTerminal dumps a session leader whose stdio and
// controlling terminal is a pty, and restores it onto another pty.
func TestRestoreControllingTerminal(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "echo")
	m1, s1 := openPty(t)
	cmd := exec.Command(bin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s1, s1, s1
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL,
		Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	out := bufio.NewReader(m1)
	readLines(t, out, func(l string) bool { return tickOf(l) >= 50 })
	img := filepath.Join(t.TempDir(), "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()

	m2, s2 := openPty(t)
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid, Stdio: [3]*os.File{s2, s2, s2}}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(s2.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", stub.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ttyNr, _ := strconv.Atoi(f[4])
	tpgid, _ := strconv.Atoi(f[5])
	if maj, min := uint32(ttyNr>>8)&0xfff, uint32(ttyNr&0xff)|uint32(ttyNr>>12)&0xfff00; maj != unix.Major(st.Rdev) || min != unix.Minor(st.Rdev) {
		t.Fatalf("controlling terminal %d:%d after restore, want the new pty %d:%d", maj, min, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if tpgid != stub.Process.Pid {
		t.Fatalf("foreground process group %d, want %d", tpgid, stub.Process.Pid)
	}
	out2 := bufio.NewReader(m2)
	if _, err := m2.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	readLines(t, out2, func(l string) bool { return l == "got hello" })
}
