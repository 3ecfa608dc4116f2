package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// nsGetUserns is NS_GET_USERNS (_IO(0xb7, 0x1)): the owning user namespace
// of a namespace fd.
const nsGetUserns = 0xb701

// nsOwner returns the inode of the user namespace that owns namespace ns of
// pid.
func nsOwner(t *testing.T, pid int, ns string) uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), nsGetUserns)
	if err != nil {
		t.Fatalf("NS_GET_USERNS of %s of %d: %v", ns, pid, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func userTimeBundle(t *testing.T, args ...string) (string, *specs.Spec) {
	bundle, s := newBundle(t, args...)
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if m.Type != "cgroup" { // cgroup v1 cannot be mounted from a user namespace
			mounts = append(mounts, m)
		}
	}
	s.Mounts = mounts
	for d := bundle; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bundle, s
}

// TestJoinUserAndTimeNamespaces creates container A with its own user
// namespace (uid 0 mapped to 400000) and time namespace (monotonic and
// boottime offsets), then container B that joins both by /proc/<pidA>/ns
// paths and has new pid, mount, net, ipc and uts namespaces: B's user and
// time namespaces are A's, it sees A's offsets, runs as A's mapped root, and
// its new namespaces belong to A's user namespace (runc's order: join the
// user namespace first, then create).
func TestJoinUserAndTimeNamespaces(t *testing.T) {
	maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 400000, Size: 65536}}
	bundleA, sA := userTimeBundle(t, "sleep", "100")
	sA.Linux.Namespaces = append(sA.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace}, specs.LinuxNamespace{Type: specs.TimeNamespace})
	sA.Linux.UIDMappings, sA.Linux.GIDMappings = maps, maps
	sA.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"monotonic": {Secs: 3000000}, "boottime": {Secs: 4000000}}
	sA.Linux.CgroupsPath += "-a"
	r := newRuntime(t)
	a := startDetached(t, r, "joina", bundleA, sA)

	bundleB, sB := userTimeBundle(t, "sh", "-c", "cat /proc/self/timens_offsets; cat /proc/uptime; exec sleep 100")
	sB.Linux.Namespaces = append(sB.Linux.Namespaces,
		specs.LinuxNamespace{Type: specs.UserNamespace, Path: fmt.Sprintf("/proc/%d/ns/user", a.Pid())},
		specs.LinuxNamespace{Type: specs.TimeNamespace, Path: fmt.Sprintf("/proc/%d/ns/time", a.Pid())})
	// Mappings may be given with the path when they are the namespace's.
	sB.Linux.UIDMappings, sB.Linux.GIDMappings = maps, maps
	sB.Linux.CgroupsPath += "-b"
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx := context.Background()
	b, err := r.Create(ctx, "joinb", CreateOpts{Bundle: bundleB, Spec: sB, Stdout: out, Stderr: out})
	if err != nil {
		t.Fatalf("create B joining A's user and time namespaces: %v", err)
	}
	t.Cleanup(func() { _ = b.Delete(ctx, true) })
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}

	na, nb := nsLinks(t, a.Pid()), nsLinks(t, b.Pid())
	for _, ns := range []string{"user", "time"} {
		if na[ns] != nb[ns] {
			t.Errorf("%s namespace: B %s, A %s", ns, nb[ns], na[ns])
		}
	}
	for _, ns := range []string{"pid", "mnt", "net", "ipc", "uts"} {
		if na[ns] == nb[ns] {
			t.Errorf("%s namespace of B is A's, want a new one", ns)
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/user", a.Pid()), &st); err != nil {
			t.Fatal(err)
		}
		if owner := nsOwner(t, b.Pid(), ns); owner != st.Ino {
			t.Errorf("new %s namespace of B belongs to user namespace %d, want A's %d", ns, owner, st.Ino)
		}
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.Pid()))
	if !strings.Contains(string(status), fmt.Sprintf("NSpid:\t%d\t1\n", b.Pid())) || !strings.Contains(string(status), "Uid:\t400000\t400000\t400000\t400000\n") {
		t.Errorf("B's init is not PID 1 running as A's mapped root:\n%s", status)
	}

	// What B's process printed: A's offsets, and an uptime past the boottime
	// offset. Wait for its two lines (it then execs sleep).
	offs, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", b.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"monotonic 3000000 0", "boottime 4000000 0"} {
		if !strings.Contains(strings.Join(strings.Fields(string(offs)), " "), want) {
			t.Errorf("B's timens_offsets %q lack %q", offs, want)
		}
	}
	p := shProcess(sB.Process, "cat /proc/self/timens_offsets; cat /proc/uptime; id -u")
	code, got := execOutput(t, b, p)
	f := strings.Fields(got)
	if code != 0 || len(f) < 9 || f[0] != "monotonic" || f[1] != "3000000" || f[8] != "0" {
		t.Fatalf("exec in B: exit %d output %q, want A's monotonic offset and uid 0", code, got)
	}
	if up, _ := strconv.ParseFloat(f[6], 64); up < 4000000 {
		t.Fatalf("uptime in B %q, want A's boottime offset", f[6])
	}
	if err := b.Delete(ctx, true); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, r, "joinb", b.Pid(), sB.Linux.CgroupsPath, bundleB)
	if initOut, _ := os.ReadFile(out.Name()); !strings.Contains(string(initOut), "monotonic") {
		t.Errorf("B's init printed %q, want its time offsets", initOut)
	}

	// Mappings that are not the joined namespace's are an error, and so are
	// offsets for a joined time namespace; neither leaves anything behind.
	sB.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 500000, Size: 65536}}
	if _, err := r.Create(ctx, "joinc", CreateOpts{Bundle: bundleB, Spec: sB}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("create with mappings differing from the joined namespace's: got %v, want ErrInvalidConfig", err)
	}
	assertNoLeaks(t, r, "joinc", 0, sB.Linux.CgroupsPath, bundleB)
	sB.Linux.UIDMappings = maps
	sB.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"monotonic": {Secs: 1}}
	if _, err := r.Create(ctx, "joind", CreateOpts{Bundle: bundleB, Spec: sB}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("create with offsets for a joined time namespace: got %v, want ErrInvalidConfig", err)
	}
}
