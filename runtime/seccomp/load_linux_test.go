package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	cdseccomp "github.com/containerd/containerd/v2/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

const childEnv = "CRYO_SECCOMP_TEST_CHILD"

// TestMain doubles as the child of the load tests: a filter cannot be
// removed, so each one is loaded in a fresh process (this test binary run
// again with childEnv set), on its locked main thread.
func TestMain(m *testing.M) {
	if c := os.Getenv(childEnv); c != "" {
		goruntime.LockOSThread()
		if err := child(c); err != nil {
			fmt.Println("child error:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return errnoNames[e]
	}
	return err.Error()
}

// defaultCaps is containerd's default capability set for a container.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func containerdProfile() *specs.LinuxSeccomp {
	return cdseccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: defaultCaps, Effective: defaultCaps, Permitted: defaultCaps,
	}}})
}

func child(c string) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	dir := os.Getenv("CRYO_SECCOMP_TEST_DIR")
	switch c {
	case "rules":
		p := &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
			Flags:         []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_TSYNC"},
			Syscalls: []specs.LinuxSyscall{
				{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno},
				{Names: []string{"personality"}, Action: specs.ActErrno, ErrnoRet: uintp(uint(unix.ENOTTY)),
					Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0xdead, Op: specs.OpEqualTo}}},
				{Names: []string{"fchmodat"}, Action: specs.ActErrno, ErrnoRet: uintp(uint(unix.EROFS)),
					Args: []specs.LinuxSeccompArg{{Index: 2, Value: 0o022, ValueTwo: 0o002, Op: specs.OpMaskedEqual}}},
			},
		}
		if _, err := Load(p); err != nil {
			return err
		}
		_, _, e := unix.RawSyscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
		_, _, e2 := unix.RawSyscall(unix.SYS_PERSONALITY, 0xdead, 0, 0)
		f := filepath.Join(dir, "f")
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return err
		}
		other := make(chan string)
		go func() {
			goruntime.LockOSThread() // another thread: TSYNC put it under the filter too
			other <- errName(unix.Mkdir(filepath.Join(dir, "t"), 0o755))
		}()
		fmt.Printf("mkdir=%s personality-query=%s personality-dead=%s getpid=%v chmod-o+w=%s chmod-g+w=%s thread-mkdir=%s\n",
			errName(unix.Mkdir(filepath.Join(dir, "d"), 0o755)),
			errName(errnoErr(e)), errName(errnoErr(e2)),
			unix.Getpid() == os.Getpid(),
			errName(unix.Fchmodat(unix.AT_FDCWD, f, 0o646, 0)),
			errName(unix.Fchmodat(unix.AT_FDCWD, f, 0o664, 0)),
			<-other)
	case "kill":
		if _, err := Load(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"uname"}, Action: specs.ActKillProcess}}}); err != nil {
			return err
		}
		var u unix.Utsname
		_ = unix.Uname(&u)
		fmt.Println("survived uname")
	case "notify":
		l, err := Load(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdirat"}, Action: specs.ActNotify}}})
		if err != nil {
			return err
		}
		if l == nil {
			return errors.New("no listener")
		}
		seen := make(chan uint32, 1)
		go func() {
			// struct seccomp_notif: id u64, pid u32, flags u32, data (64 bytes).
			var req [80]byte
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, l.Fd(), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
				seen <- 0
				return
			}
			seen <- binary.NativeEndian.Uint32(req[16:])
			// struct seccomp_notif_resp: id u64, val s64, error s32, flags u32.
			var resp [24]byte
			copy(resp[0:8], req[0:8])
			errno := -int32(unix.ENOTTY)
			binary.NativeEndian.PutUint32(resp[16:], uint32(errno))
			unix.Syscall(unix.SYS_IOCTL, l.Fd(), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&resp[0])))
		}()
		err = unix.Mkdirat(unix.AT_FDCWD, filepath.Join(dir, "n"), 0o755)
		fmt.Printf("mkdirat=%s notified-nr=%d\n", errName(err), <-seen)
	case "containerd":
		if _, err := Load(containerdProfile()); err != nil {
			return err
		}
		fmt.Printf("unshare=%s\n", errName(unix.Unshare(unix.CLONE_NEWNS)))
		bb, err := exec.LookPath("busybox")
		if err != nil {
			return err
		}
		return syscall.Exec(bb, []string{"busybox", "ls", "/"}, os.Environ())
	default:
		return fmt.Errorf("unknown case %q", c)
	}
	return nil
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func runChild(t *testing.T, c string) (string, error) {
	t.Helper()
	testutil.RequiresRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+c, "CRYO_SECCOMP_TEST_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestLoadRules(t *testing.T) {
	out, err := runChild(t, "rules")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "mkdir=EPERM personality-query=ok personality-dead=ENOTTY getpid=true chmod-o+w=EROFS chmod-g+w=ok thread-mkdir=EPERM"
	if out != want {
		t.Fatalf("got  %q\nwant %q", out, want)
	}
}

func TestLoadKillProcess(t *testing.T) {
	out, err := runChild(t, "kill")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != unix.SIGSYS {
		t.Fatalf("got %v (%q), want death by SIGSYS", err, out)
	}
}

func TestLoadNotify(t *testing.T) {
	out, err := runChild(t, "notify")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := fmt.Sprintf("mkdirat=ENOTTY notified-nr=%d", unix.SYS_MKDIRAT); out != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}

func TestContainerdDefaultProfile(t *testing.T) {
	f, err := Compile(containerdProfile())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d instructions, skipped %v", len(f.Program), f.Skipped)
	for _, c := range []struct {
		name string
		d    data
		want uint32
	}{
		{"read", x64("read"), retAllow},
		{"unshare without CAP_SYS_ADMIN", x64("unshare"), retErrno | 1},
		{"socket AF_UNIX", x64("socket", unix.AF_UNIX), retAllow},
		{"socket AF_INET6", x64("socket", unix.AF_INET6), retAllow},
		{"personality PER_LINUX", x64("personality", 0), retAllow},
		{"clone3 answers ENOSYS", x64("clone3"), retErrno | uint32(unix.ENOSYS)},
	} {
		if got := run(t, f.Program, c.d); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}

	out, err := runChild(t, "containerd")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.SplitN(out, "\n", 2)
	if lines[0] != "unshare=EPERM" || len(lines) < 2 {
		t.Fatalf("got %q, want unshare=EPERM then the listing", out)
	}
	for _, d := range []string{"proc", "etc", "usr"} {
		if !strings.Contains(" "+strings.Join(strings.Fields(lines[1]), " ")+" ", " "+d+" ") {
			t.Errorf("busybox ls / under the profile: %q lacks %s", lines[1], d)
		}
	}
}

var errnoNames = map[syscall.Errno]string{
	unix.EPERM: "EPERM", unix.ENOTTY: "ENOTTY", unix.EROFS: "EROFS", unix.ENOSYS: "ENOSYS",
	unix.EACCES: "EACCES", unix.EINVAL: "EINVAL",
}
