package cgroups

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// testParent is the parent of every cgroup these tests create (branch name
// prefix: several helpers share this machine).
const testParent = "/cryo-cgroups-test"

// testPath returns a unique cgroup path for the test.
func testPath(t *testing.T) string {
	t.Helper()
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return fmt.Sprintf("%s/%s-%d-%d", testParent, name, os.Getpid(), time.Now().UnixNano()%1e6)
}

// newTestManager creates a cgroup that is killed, deleted and checked gone
// at the end of the test.
func newTestManager(t *testing.T, r *specs.LinuxResources) Manager {
	t.Helper()
	testutil.RequiresRoot(t)
	m, err := New(testPath(t), r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupManager(t, m) })
	return m
}

func cleanupManager(t *testing.T, m Manager) {
	t.Helper()
	if err := m.Kill(unix.SIGKILL); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kill: %v", err)
	}
	if err := m.Delete(); err != nil {
		t.Errorf("delete: %v", err)
	}
	for c, d := range m.Paths() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("controller %q: %s still exists after Delete (%v)", c, d, err)
		}
		// Best effort: the shared parent goes when the last test is done.
		_ = unix.Rmdir(filepath.Dir(d))
	}
}

// startProc starts a command whose stdin gates it: the process waits until
// release is called, so that it can be put in a cgroup first.
func startProc(t *testing.T, script string) (cmd *exec.Cmd, release func()) {
	cmd, release, _ = startProcOut(t, script)
	return cmd, release
}

// startProcOut is startProc with the process's stdout.
func startProcOut(t *testing.T, script string) (cmd *exec.Cmd, release func(), stdout io.Reader) {
	t.Helper()
	cmd = exec.Command("/bin/sh", "-c", "read x; "+script)
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if stdout, err = cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, func() {
		if _, err := io.WriteString(w, "go\n"); err != nil {
			t.Fatal(err)
		}
	}, stdout
}

// cpuTicks is utime+stime of a process in clock ticks.
func cpuTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseUint(f[11], 10, 64)
	k, _ := strconv.ParseUint(f[12], 10, 64)
	return u + k
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func u16(v uint16) *uint16 { return &v }
func boolp(v bool) *bool   { return &v }
func readT(t *testing.T, dir, file string) string {
	t.Helper()
	s, err := readFile(dir, file)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestResourcesReadBack(t *testing.T) {
	testutil.RequiresRoot(t)
	mode, err := DetectMode()
	if err != nil {
		t.Fatal(err)
	}
	r := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{
			Limit:       i64(64 << 20),
			Reservation: i64(32 << 20),
		},
		CPU: &specs.LinuxCPU{
			Shares: u64(512),
			Quota:  i64(50000),
			Period: u64(100000),
			Cpus:   "0",
			Mems:   "0",
		},
		Pids: &specs.LinuxPids{Limit: i64(42)},
		BlockIO: &specs.LinuxBlockIO{
			ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 254, Minor: 0}, Rate: 1 << 20}},
			ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 254, Minor: 0}, Rate: 100}},
		},
		Devices: []specs.LinuxDeviceCgroup{
			{Allow: false, Access: "rwm"},
			{Allow: true, Type: "c", Major: i64(1), Minor: i64(3), Access: "rwm"},
			{Allow: true, Type: "c", Major: i64(5), Minor: nil, Access: "r"},
		},
	}
	if mode != Unified {
		r.Memory.Swap = i64(128 << 20)
		r.Memory.Swappiness = u64(10)
	}
	if _, err := os.Stat("/sys/block/vda"); err != nil {
		r.BlockIO = nil
	}
	m := newTestManager(t, r)
	p := m.Paths()
	cmd, release := startProc(t, "exec sleep 60")
	if err := m.Apply(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()

	type check struct{ ctrl, file, want string }
	var checks []check
	if mode == Unified {
		checks = []check{
			{"", "memory.max", "67108864"},
			{"", "memory.low", "33554432"},
			{"", "cpu.weight", strconv.FormatUint(CPUSharesToWeight(512), 10)},
			{"", "cpu.max", "50000 100000"},
			{"", "cpuset.cpus", "0"},
			{"", "pids.max", "42"},
		}
	} else {
		checks = []check{
			{"memory", "memory.limit_in_bytes", "67108864"},
			{"memory", "memory.soft_limit_in_bytes", "33554432"},
			{"memory", "memory.memsw.limit_in_bytes", "134217728"},
			{"memory", "memory.swappiness", "10"},
			{"cpu", "cpu.shares", "512"},
			{"cpu", "cpu.cfs_quota_us", "50000"},
			{"cpu", "cpu.cfs_period_us", "100000"},
			{"cpuset", "cpuset.cpus", "0"},
			{"cpuset", "cpuset.mems", "0"},
			{"pids", "pids.max", "42"},
			{"devices", "devices.list", "c 1:3 rwm\nc 5:* r"},
		}
		if r.BlockIO != nil {
			checks = append(checks,
				check{"blkio", "blkio.throttle.read_bps_device", "254:0 1048576"},
				check{"blkio", "blkio.throttle.write_iops_device", "254:0 100"})
		}
	}
	for _, c := range checks {
		if got := readT(t, p[c.ctrl], c.file); got != c.want {
			t.Errorf("%s: got %q, want %q", c.file, got, c.want)
		}
	}
	// Every hierarchy has the process.
	for c, d := range p {
		if got := readT(t, d, "cgroup.procs"); got != strconv.Itoa(cmd.Process.Pid) {
			t.Errorf("controller %q cgroup.procs: got %q, want %d", c, got, cmd.Process.Pid)
		}
	}

	// An update that raises the memory limit above the old memsw limit
	// needs memsw written first.
	if mode != Unified {
		up := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(256 << 20), Swap: i64(512 << 20)}}
		if err := m.Set(up); err != nil {
			t.Fatal(err)
		}
		if got := readT(t, p["memory"], "memory.limit_in_bytes"); got != "268435456" {
			t.Errorf("limit after update: got %s", got)
		}
		// And lowering both needs the limit first.
		down := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(16 << 20), Swap: i64(20 << 20)}}
		if err := m.Set(down); err != nil {
			t.Fatal(err)
		}
		if got := readT(t, p["memory"], "memory.memsw.limit_in_bytes"); got != "20971520" {
			t.Errorf("memsw after update: got %s", got)
		}
	}
}

func TestHugetlb(t *testing.T) {
	testutil.RequiresRoot(t)
	if _, err := os.Stat("/sys/kernel/mm/hugepages/hugepages-2048kB"); err != nil {
		testutil.SkipOrFail(t, "no 2MB huge pages on this kernel")
	}
	m := newTestManager(t, &specs.LinuxResources{
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}},
	})
	p := m.Paths()
	dir, file := p["hugetlb"], "hugetlb.2MB.limit_in_bytes"
	if dir == "" {
		dir, file = p[""], "hugetlb.2MB.max"
	}
	if got := readT(t, dir, file); got != "4194304" {
		t.Errorf("%s: got %q, want 4194304", file, got)
	}
}

func TestSetErrors(t *testing.T) {
	m := newTestManager(t, nil)
	mode := m.Mode()
	cases := []struct {
		name string
		r    *specs.LinuxResources
		want error
	}{
		{"bad page size", &specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2XB", Limit: 1}}}, ErrInvalid},
		{"unified key with slash", &specs.LinuxResources{Unified: map[string]string{"../memory.max": "1"}}, ErrInvalid},
		{"bad device type", &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Type: "x", Access: "r"}}}, ErrInvalid},
	}
	if mode != Unified {
		cases = append(cases,
			struct {
				name string
				r    *specs.LinuxResources
				want error
			}{"swappiness above 100", &specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: u64(200)}}, ErrInvalid})
		if _, ok := m.Paths()["net_cls"]; !ok {
			cases = append(cases, struct {
				name string
				r    *specs.LinuxResources
				want error
			}{"net_cls not mounted", &specs.LinuxResources{Network: &specs.LinuxNetwork{ClassID: func() *uint32 { v := uint32(1); return &v }()}}, ErrUnsupported})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := m.Set(c.r)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	// A write error names the controller file.
	err := m.Set(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(32 << 20)}})
	if err == nil || (mode != Unified && !strings.Contains(err.Error(), "memory.")) {
		t.Fatalf("memory+swap below the limit: got %v, want an error naming the file", err)
	}
}

func TestFreezeThaw(t *testing.T) {
	m := newTestManager(t, nil)
	testFreezeThaw(t, m)
}

func testFreezeThaw(t *testing.T, m Manager) {
	t.Helper()
	cmd, release := startProc(t, "while :; do :; done")
	pid := cmd.Process.Pid
	if err := m.Apply(pid); err != nil {
		t.Fatal(err)
	}
	release()
	start := cpuTicks(t, pid)
	waitFor(t, "the loop to run", func() bool { return cpuTicks(t, pid) > start+2 })

	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if s, err := m.State(); err != nil || s != Frozen {
		t.Fatalf("state after Freeze: got %v %v, want FROZEN", s, err)
	}
	before := cpuTicks(t, pid)
	time.Sleep(200 * time.Millisecond) // a running loop gains ~20 ticks here
	if after := cpuTicks(t, pid); after != before {
		t.Fatalf("frozen process ran: ticks %d -> %d", before, after)
	}
	if err := m.Freeze(); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}
	if s, err := m.State(); err != nil || s != Thawed {
		t.Fatalf("state after Thaw: got %v %v, want THAWED", s, err)
	}
	waitFor(t, "the thawed loop to run", func() bool { return cpuTicks(t, pid) > before+2 })
}

func TestPidsKillDelete(t *testing.T) {
	m := newTestManager(t, nil)
	testPidsKillDelete(t, m)
}

func testPidsKillDelete(t *testing.T, m Manager) {
	t.Helper()
	cmd, release := startProc(t, "sleep 60 & sleep 60 & wait")
	if err := m.Apply(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	var (
		pids []int
		err  error
	)
	waitFor(t, "three processes", func() bool {
		pids, err = m.Pids()
		if err != nil {
			t.Fatal(err)
		}
		return len(pids) == 3
	})
	if !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("pids %v lack the shell %d", pids, cmd.Process.Pid)
	}
	if err := m.Kill(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
		t.Fatalf("shell: got %v, want killed by SIGKILL", err)
	}
	waitFor(t, "an empty cgroup", func() bool {
		pids, err = m.Pids()
		return err == nil && len(pids) == 0
	})
	if err := m.Delete(); err != nil {
		t.Fatal(err)
	}
	for c, d := range m.Paths() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("controller %q: %s exists after Delete", c, d)
		}
	}
	if _, err := Load(m.Path()); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Load after Delete: got %v, want ErrNotExist", err)
	}
	if err := m.Delete(); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestKillSignalKeepsFrozen(t *testing.T) {
	m := newTestManager(t, nil)
	cmd, release, out := startProcOut(t, "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done")
	if err := m.Apply(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	if _, err := io.ReadFull(out, make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := m.Kill(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if s, _ := m.State(); s != Frozen {
		t.Fatalf("state after SIGTERM to a paused cgroup: got %v, want FROZEN", s)
	}
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("shell: got %v, want exit 7 from its TERM trap", err)
	}
}

func TestLoadAndRelativePath(t *testing.T) {
	m := newTestManager(t, nil)
	l, err := Load(m.Path())
	if err != nil {
		t.Fatal(err)
	}
	if l.Path() != m.Path() {
		t.Fatalf("got %s, want %s", l.Path(), m.Path())
	}
	if _, err := Load(testPath(t)); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Load of a missing cgroup: got %v, want ErrNotExist", err)
	}
	ctrl := "freezer"
	if m.Mode() == Unified {
		ctrl = ""
	}
	own, err := ownCgroup(ctrl)
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(testPath(t), "/")
	r, err := New(rel, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupManager(t, r) })
	if want := filepath.Join(own, rel); r.Path() != want {
		t.Fatalf("relative path: got %s, want %s", r.Path(), want)
	}
	if _, err := New("a/../../b", nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("path with ..: got %v, want ErrInvalid", err)
	}
}

func TestStats(t *testing.T) {
	m := newTestManager(t, &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(256 << 20)},
		Pids:   &specs.LinuxPids{Limit: i64(50)},
	})
	// Touch 32 MiB then spin.
	cmd, release := startProc(t, "exec dd if=/dev/zero of=/dev/null bs=32M count=100000")
	if err := m.Apply(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	var st *Stats
	waitFor(t, "cpu usage and 32 MiB charged", func() bool {
		var err error
		st, err = m.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.V1 != nil {
			return st.V1.CPU != nil && st.V1.CPU.Usage.Total > 10e6 && st.V1.Memory.Usage.Usage >= 32<<20
		}
		return st.V2.CPU.UsageUsec > 10e3 && st.V2.Memory.Usage >= 32<<20
	})
	if st.V1 != nil {
		if st.V1.Memory.Usage.Limit != 256<<20 {
			t.Errorf("memory limit: got %d", st.V1.Memory.Usage.Limit)
		}
		if st.V1.Pids.Current != 1 || st.V1.Pids.Limit != 50 {
			t.Errorf("pids: got %d/%d, want 1/50", st.V1.Pids.Current, st.V1.Pids.Limit)
		}
		if len(st.V1.CPU.Usage.PerCPU) == 0 || st.V1.CPU.Usage.User+st.V1.CPU.Usage.Kernel == 0 {
			t.Errorf("cpu: got %+v", st.V1.CPU.Usage)
		}
	} else {
		if st.V2.Memory.UsageLimit != 256<<20 || st.V2.Pids.Limit != 50 || st.V2.Pids.Current != 1 {
			t.Errorf("got memory limit %d pids %d/%d", st.V2.Memory.UsageLimit, st.V2.Pids.Current, st.V2.Pids.Limit)
		}
	}
	if m.Mode() == Hybrid && (st.V2 == nil || st.V2.CPU == nil || st.V2.CPU.UsageUsec == 0) {
		t.Errorf("hybrid: v2 cpu stats missing: %+v", st.V2)
	}
}

func TestOOMEvents(t *testing.T) {
	limit := int64(16 << 20)
	r := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	m := newTestManager(t, r)
	if m.Mode() != Unified {
		if err := m.Set(&specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: &limit}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.OOMEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cmd, release := startProc(t, "exec dd if=/dev/zero of=/dev/null bs=64M count=1")
	if err := m.Apply(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatal("channel closed before an OOM event")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OOM event within 10s")
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
		t.Fatalf("dd: got %v, want killed by the OOM killer", err)
	}
	// Deleting the cgroup closes the channel.
	if err := m.Delete(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("channel not closed after Delete")
		}
	}
}
