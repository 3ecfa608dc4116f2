package ptrace

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// TestSeizeInjectDetach seizes a sleeping process, runs getppid() inside it
// through a syscall instruction of its vdso, and lets it go unchanged.
func TestSeizeInjectDetach(t *testing.T) {
	testutil.RequiresRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command("sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	if err := Seize(pid, 0); err != nil {
		t.Fatal(err)
	}
	if err := Interrupt(pid); err != nil {
		t.Fatal(err)
	}
	ws, err := Wait(pid)
	if err != nil || !ws.Stopped() || Event(ws) != EventStop {
		t.Fatalf("wait: %v %v", ws, err)
	}
	saved, err := GetRegs(pid)
	if err != nil {
		t.Fatal(err)
	}
	mask, err := GetSigmask(pid)
	if err != nil {
		t.Fatal(err)
	}
	xs, err := GetXState(pid)
	if err != nil || len(xs) < 576 {
		t.Fatalf("xstate of %d bytes: %v", len(xs), err)
	}
	// Find a syscall instruction in the vdso.
	maps, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	var vdso uint64
	for _, l := range bytes.Split(maps, []byte("\n")) {
		if bytes.HasSuffix(l, []byte("[vdso]")) {
			vdso, _ = strconv.ParseUint(string(l[:bytes.IndexByte(l, '-')]), 16, 64)
		}
	}
	mem, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	code := make([]byte, 8192)
	if _, err := mem.ReadAt(code, int64(vdso)); err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(code, []byte{0x0f, 0x05})
	if vdso == 0 || i < 0 {
		t.Fatal("no syscall instruction in the vdso")
	}
	if err := SetSigmask(pid, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	r := saved
	r.Rip, r.Rax, r.Orig_rax = vdso+uint64(i), unix.SYS_GETPPID, ^uint64(0)
	if err := SetRegs(pid, &r); err != nil {
		t.Fatal(err)
	}
	if err := SingleStep(pid); err != nil {
		t.Fatal(err)
	}
	if ws, err := Wait(pid); err != nil || ws.StopSignal() != unix.SIGTRAP {
		t.Fatalf("single step: %v %v", ws, err)
	}
	out, err := GetRegs(pid)
	if err != nil {
		t.Fatal(err)
	}
	if int(out.Rax) != os.Getpid() {
		t.Fatalf("getppid() in the tracee returned %d, want %d", int64(out.Rax), os.Getpid())
	}
	if err := SetRegs(pid, &saved); err != nil {
		t.Fatal(err)
	}
	if err := SetXState(pid, xs); err != nil {
		t.Fatal(err)
	}
	if err := SetSigmask(pid, mask); err != nil {
		t.Fatal(err)
	}
	if err := Detach(pid, 0); err != nil {
		t.Fatal(err)
	}
	// Untraced and still sleeping.
	status, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if !bytes.Contains(status, []byte("TracerPid:\t0\n")) {
		t.Fatalf("still traced:\n%s", status)
	}
}
