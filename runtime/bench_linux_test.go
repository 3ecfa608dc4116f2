package runtime

// Container-level benchmarks (make bench): checkpoint and restore of real
// containers through the runtime, the stall a --leave-running checkpoint
// causes as seen from inside the workload, and the create/start/delete
// latency next to runc. docs/bench.sh turns the output into a table.

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

// benchSizes are the touched-memory sizes of the checkpoint benchmarks.
var benchSizes = []struct {
	name string
	mib  int
}{{"64MiB", 64}, {"512MiB", 512}, {"1GiB", 1024}}

const benchTreeProcs = 50

// buildBenchHog compiles the benchmark workload.
func buildBenchHog(b testing.TB) string { return buildC(b, "benchhog") }

// buildC compiles testdata/<name>.c (static, so that a rootfs needs no libc).
func buildC(b testing.TB, name string) string {
	b.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		b.Fatalf("gcc is needed to build the benchmark programs: %v", err)
	}
	out := filepath.Join(b.TempDir(), name)
	if o, err := exec.Command("gcc", "-static", "-O2", "-o", out, "testdata/"+name+".c").CombinedOutput(); err != nil {
		b.Fatalf("gcc %s: %v\n%s", name, err, o)
	}
	return out
}

// benchBundle writes a bundle whose rootfs holds busybox (for /bin/true) and,
// when hog is set, the benchmark workload as /bin/benchhog.
func benchBundle(b testing.TB, hog string, args ...string) (string, *specs.Spec) {
	b.Helper()
	testutil.RequiresRoot(b)
	bundle := b.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "etc", "tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if bb, err := exec.LookPath("busybox"); err == nil {
		benchCopy(b, bb, filepath.Join(rootfs, "bin/busybox"))
		for _, a := range []string{"sh", "true", "sleep", "cat"} {
			if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
				b.Fatal(err)
			}
		}
	}
	if hog != "" {
		benchCopy(b, hog, filepath.Join(rootfs, "bin/benchhog"))
	}
	s := DefaultSpec()
	s.Root.Readonly = false
	s.Process.Terminal = false
	s.Process.Args = args
	s.Linux.CgroupsPath = "/cryo-perf-bench-" + sanitize(b.Name())
	data, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	s.Root.Path = rootfs
	return bundle, s
}

func benchCopy(b testing.TB, src, dst string) {
	b.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		b.Fatal(err)
	}
}

// benchID is a container id unique to the benchmark (and its iteration).
func benchID(b testing.TB, i int) string {
	return fmt.Sprintf("perf-%s-%d", strings.ToLower(sanitize(strings.ReplaceAll(b.Name(), "/", "-"))), i)
}

// waitReady waits until the workload has written /tmp/ready.
func waitReady(b testing.TB, rootfs string) {
	b.Helper()
	p := filepath.Join(rootfs, "tmp/ready")
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(p); err == nil && string(data) == "ready" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("workload never got ready (%s)", p)
}

// startBench creates and starts a container from the bundle and waits for
// its workload to be ready.
func startBench(b testing.TB, r *Runtime, id, bundle string, s *specs.Spec) *Container {
	b.Helper()
	ctx := context.Background()
	_ = os.Remove(filepath.Join(s.Root.Path, "tmp/ready"))
	c, err := r.Create(ctx, id, CreateOpts{Bundle: bundle, Spec: s})
	if err != nil {
		b.Fatalf("create: %v", err)
	}
	b.Cleanup(func() {
		if c, err := r.Load(id); err == nil {
			_ = c.Delete(ctx, true)
		}
	})
	if err := c.Start(ctx); err != nil {
		b.Fatalf("start: %v", err)
	}
	waitReady(b, s.Root.Path)
	return c
}

// dirBytes is the size of the files under dir (an OCI layout: every blob once).
func dirBytes(b testing.TB, dir string) int64 {
	b.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// phases sums the durations the runtime reports for each phase of its
// checkpoints and restores (phaseTimer) while a benchmark runs.
type phases struct {
	mu  sync.Mutex
	sum map[string]time.Duration
}

func recordPhases(b *testing.B) *phases {
	p := &phases{sum: map[string]time.Duration{}}
	phaseTimer = func(name string, d time.Duration) {
		p.mu.Lock()
		p.sum[name] += d
		p.mu.Unlock()
	}
	b.Cleanup(func() { phaseTimer = nil })
	return p
}

// report adds one ms/op metric per phase.
func (p *phases) report(b *testing.B) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, d := range p.sum {
		b.ReportMetric(float64(d.Microseconds())/1e3/float64(b.N), name+"-ms/op")
	}
}

// workloads are the containers checkpointed and restored: a process with
// touched memory of each size, and a 50-process tree (1 MiB each).
type benchWorkload struct {
	name string
	args []string
	mem  int64 // touched bytes
}

func benchWorkloads() []benchWorkload {
	var out []benchWorkload
	for _, sz := range benchSizes {
		out = append(out, benchWorkload{sz.name, []string{"/bin/benchhog", "mem", strconv.Itoa(sz.mib)}, int64(sz.mib) << 20})
	}
	return append(out, benchWorkload{fmt.Sprintf("tree%d", benchTreeProcs),
		[]string{"/bin/benchhog", "tree", strconv.Itoa(benchTreeProcs), "1"}, benchTreeProcs << 20})
}

// benchCheckpoints is the body of the checkpoint benchmarks: each iteration
// starts a fresh container from bundle outside the timer and times only its
// checkpoint with opts (ImagePath is set here); it reports the phases and the
// mean image size.
func benchCheckpoints(b *testing.B, bundle string, s *specs.Spec, opts CheckpointOpts) {
	r := newBenchRuntime(b)
	ph := recordPhases(b)
	var img int64
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		c := startBench(b, r, benchID(b, i), bundle, s)
		opts.ImagePath = filepath.Join(b.TempDir(), "image")
		b.StartTimer()
		if _, err := c.Checkpoint(context.Background(), opts); err != nil {
			b.Fatalf("checkpoint: %v", err)
		}
		b.StopTimer()
		img += dirBytes(b, opts.ImagePath)
		if err := os.RemoveAll(opts.ImagePath); err != nil {
			b.Fatal(err)
		}
	}
	ph.report(b)
	b.ReportMetric(float64(img)/float64(b.N)/(1<<20), "image-MiB")
}

// BenchmarkCheckpoint checkpoints a running container (runc's default: the
// container is stopped once its image is written). Each iteration starts a
// fresh container first, outside the timer.
func BenchmarkCheckpoint(b *testing.B) {
	testutil.RequiresRoot(b)
	hog := buildBenchHog(b)
	for _, w := range benchWorkloads() {
		b.Run(w.name, func(b *testing.B) {
			bundle, s := benchBundle(b, hog, w.args...)
			b.SetBytes(w.mem)
			benchCheckpoints(b, bundle, s, CheckpointOpts{})
		})
	}
}

// BenchmarkCheckpointPreCopy is BenchmarkCheckpoint with a pre-copy: the
// container is stopped only at the end (stopped-ms, the downtime of a
// migration), for a longer checkpoint (ms/op).
func BenchmarkCheckpointPreCopy(b *testing.B) {
	testutil.RequiresRoot(b)
	hog := buildBenchHog(b)
	for _, w := range benchWorkloads() {
		b.Run(w.name, func(b *testing.B) {
			bundle, s := benchBundle(b, hog, w.args...)
			b.SetBytes(w.mem)
			benchCheckpoints(b, bundle, s, CheckpointOpts{PreCopy: true})
		})
	}
}

// BenchmarkRestore restores a container from one checkpoint image, again
// and again (the image is verified every time: as root, through the cache
// of verified blobs that the checkpoint filled, oci.VerifyCache); the
// restored container is deleted outside the timer.
func BenchmarkRestore(b *testing.B) {
	testutil.RequiresRoot(b)
	hog := buildBenchHog(b)
	for _, w := range benchWorkloads() {
		b.Run(w.name, func(b *testing.B) { benchRestore(b, hog, w, false) })
	}
}

// BenchmarkRestoreVerifyFull is BenchmarkRestore/512MiB hashing every blob
// every time (cryo restore --verify-full).
func BenchmarkRestoreVerifyFull(b *testing.B) {
	testutil.RequiresRoot(b)
	hog := buildBenchHog(b)
	for _, w := range benchWorkloads() {
		if w.name == "512MiB" {
			b.Run(w.name, func(b *testing.B) { benchRestore(b, hog, w, true) })
		}
	}
}

func benchRestore(b *testing.B, hog string, w benchWorkload, full bool) {
	bundle, s := benchBundle(b, hog, w.args...)
	r := newBenchRuntime(b)
	ctx := context.Background()
	id := benchID(b, 0)
	c := startBench(b, r, id, bundle, s)
	image := filepath.Join(b.TempDir(), "image")
	if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: image}); err != nil {
		b.Fatalf("checkpoint: %v", err)
	}
	b.SetBytes(w.mem)
	benchRestores(b, r, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle, Spec: s}, ImagePath: image, VerifyFull: full}, nil)
}

// benchRestores restores container id with opts b.N times, timing only the
// restores; outside the timer each restored container must be running,
// check (if set) runs, and the container is deleted. It reports the phases
// and the image size.
func benchRestores(b *testing.B, r *Runtime, id string, opts RestoreOpts, check func()) {
	ctx := context.Background()
	ph := recordPhases(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c2, err := r.Restore(ctx, id, opts)
		if err != nil {
			b.Fatalf("restore: %v", err)
		}
		b.StopTimer()
		if st, err := c2.Status(); err != nil || st != Running {
			b.Fatalf("restored container: %v, %v", st, err)
		}
		if check != nil {
			check()
		}
		if err := c2.Delete(ctx, true); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	ph.report(b)
	b.ReportMetric(float64(dirBytes(b, opts.ImagePath))/(1<<20), "image-MiB")
}

// BenchmarkStall measures what a --leave-running checkpoint costs the
// workload: benchhog's stall mode reads CLOCK_MONOTONIC every ~100 us and
// logs every gap over 1 ms; the largest gap that ends after the checkpoint
// began is the stall (stall-ms). ms/op is the whole checkpoint, packing
// included (which runs after the workload resumed).
func BenchmarkStall(b *testing.B) {
	testutil.RequiresRoot(b)
	hog := buildBenchHog(b)
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			bundle, s := benchBundle(b, hog, "/bin/benchhog", "stall", strconv.Itoa(sz.mib))
			r := newBenchRuntime(b)
			c := startBench(b, r, benchID(b, 0), bundle, s)
			b.SetBytes(int64(sz.mib) << 20)
			benchStalls(b, c, filepath.Join(s.Root.Path, "tmp/gaps"), CheckpointOpts{})
		})
	}
}

// benchStalls checkpoints c with opts and LeaveRunning b.N times, and
// reports the stall the workload logged in its gaps file for each (the
// largest gap ending after the checkpoint began): its mean (stall-ms) and
// maximum (stall-max-ms), with the phases.
func benchStalls(b *testing.B, c *Container, gaps string, opts CheckpointOpts) {
	opts.LeaveRunning = true
	ph := recordPhases(b)
	var stall, worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		opts.ImagePath = filepath.Join(b.TempDir(), "image")
		start := monotonic()
		b.StartTimer()
		if _, err := c.Checkpoint(context.Background(), opts); err != nil {
			b.Fatalf("checkpoint: %v", err)
		}
		b.StopTimer()
		g := waitGap(b, gaps, start)
		stall += g
		worst = max(worst, g)
		if err := os.RemoveAll(opts.ImagePath); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	ph.report(b)
	b.ReportMetric(float64(stall.Microseconds())/1e3/float64(b.N), "stall-ms")
	b.ReportMetric(float64(worst.Microseconds())/1e3, "stall-max-ms")
}

func monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// waitGap returns the largest gap the workload logged that ended after
// start (the container shares the host's CLOCK_MONOTONIC: it was created,
// not restored, so it has no time offset).
func waitGap(b testing.TB, path string, start time.Duration) time.Duration {
	b.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		var worst time.Duration
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			end, err1 := strconv.ParseInt(f[0], 10, 64)
			gap, err2 := strconv.ParseInt(f[1], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			if time.Duration(end) > start {
				worst = max(worst, time.Duration(gap))
			}
		}
		if worst > 0 {
			// The thread reports when it runs again: a few ms more for
			// a later, larger gap of the same stall is not possible.
			return worst
		}
		if time.Now().After(deadline) {
			b.Fatalf("the workload logged no gap over 1 ms after the checkpoint began")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newBenchRuntime(b testing.TB) *Runtime {
	b.Helper()
	r, err := New(filepath.Join(b.TempDir(), "root"))
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkMemcpyBaseline is the machine's memory copy rate at the time of
// the run (other load included), to read the numbers above against.
func BenchmarkMemcpyBaseline(b *testing.B) {
	src := make([]byte, 64<<20)
	dst := make([]byte, 64<<20)
	for i := range src {
		src[i] = byte(i)
	}
	b.SetBytes(int64(len(src)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(dst, src)
	}
}

// BenchmarkNewFileBaseline writes 512 MiB into a new file from a buffer
// already in use (the page cache of a dump's image, in 16 MiB writes): on a
// paravirtual guest whose free memory goes back to the host, the first
// touch of every page new to the guest costs a hypervisor fault, which
// bounds every dump here. The files stay until the end, so that each one
// needs memory the others do not hold.
func BenchmarkNewFileBaseline(b *testing.B) {
	buf := make([]byte, 16<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	const size = 512 << 20
	b.SetBytes(size)
	dir := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.Create(filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < size; n += len(buf) {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLifecycleTrue is create + start + wait + delete of a /bin/true
// container: through the runtime package, through the cryo binary, and
// through Debian's runc. For the binaries, peak-RSS-MiB is the largest
// maximum resident set size of the create, start and delete processes.
func BenchmarkLifecycleTrue(b *testing.B) {
	testutil.RequiresRoot(b)
	b.Run("cryo-lib", func(b *testing.B) {
		bundle, s := benchBundle(b, "", "/bin/true")
		r := newBenchRuntime(b)
		ctx := context.Background()
		id := benchID(b, 0)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c, err := r.Create(ctx, id, CreateOpts{Bundle: bundle, Spec: s})
			if err != nil {
				b.Fatalf("create: %v", err)
			}
			if err := c.Start(ctx); err != nil {
				b.Fatalf("start: %v", err)
			}
			if code, err := c.Wait(); err != nil || code != 0 {
				b.Fatalf("wait: %d, %v", code, err)
			}
			if err := c.Delete(ctx, false); err != nil {
				b.Fatalf("delete: %v", err)
			}
		}
	})
	b.Run("cryo-cli", func(b *testing.B) {
		benchCLILifecycle(b, cryoBinary(b))
	})
	b.Run("runc-cli", func(b *testing.B) {
		runc, err := exec.LookPath("runc")
		if err != nil {
			skipNote(b, "runc not on PATH (apt-get install runc): no runc comparison")
		}
		benchCLILifecycle(b, runc)
	})
}

// cryoBinary is bin/cryo (make bench builds it), else a fresh build.
func cryoBinary(b testing.TB) string {
	b.Helper()
	if p, err := filepath.Abs("../bin/cryo"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	out := filepath.Join(b.TempDir(), "cryo")
	gocmd := filepath.Join(os.Getenv("GOROOT"), "bin/go")
	if _, err := os.Stat(gocmd); err != nil {
		gocmd = "go"
	}
	if o, err := exec.Command(gocmd, "build", "-o", out, "../cmd/cryo").CombinedOutput(); err != nil {
		b.Fatalf("build cryo: %v\n%s", err, o)
	}
	return out
}

// benchCLILifecycle runs `bin create; bin start; wait; bin delete` with a
// runc-compatible CLI.
func benchCLILifecycle(b *testing.B, bin string) {
	bundle, s := benchBundle(b, "", "/bin/true")
	_ = s
	root := filepath.Join(b.TempDir(), "root")
	id := benchID(b, 0)
	// A file, not a pipe, for the output: the container's init inherits it.
	out, err := os.CreateTemp(b.TempDir(), "out")
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	maxrss := buildC(b, "maxrss")
	rssFile := filepath.Join(b.TempDir(), "rss")
	var peak int64
	run := func(args ...string) {
		cmd := exec.Command(maxrss, append([]string{rssFile, bin, "--root", root}, args...)...)
		cmd.Dir = bundle
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			data, _ := os.ReadFile(out.Name())
			b.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, data)
		}
		data, err := os.ReadFile(rssFile)
		if err != nil {
			b.Fatal(err)
		}
		kib, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, kib)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pidFile := filepath.Join(bundle, "pid")
		run("create", "--bundle", bundle, "--pid-file", pidFile, id)
		data, err := os.ReadFile(pidFile)
		if err != nil {
			b.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil {
			b.Fatal(err)
		}
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			b.Fatal(err)
		}
		run("start", id)
		// The init is not our child: wait for its exit through a pidfd.
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, 10_000); err != unix.EINTR {
				break
			}
		}
		unix.Close(pidfd)
		run("delete", id)
	}
	b.StopTimer()
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
}

// criuVersion returns the major and minor version of the criu on PATH.
func criuVersion() (major, minor int, err error) {
	out, err := exec.Command("criu", "--version").Output()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Version:"); ok {
			f := strings.SplitN(strings.TrimSpace(v), ".", 3)
			if len(f) < 2 {
				break
			}
			major, err1 := strconv.Atoi(f[0])
			minor, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil {
				return major, minor, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no version in %q", out)
}

// BenchmarkRuncCRIU is the comparison point: the same workloads
// checkpointed and restored by runc with CRIU, when a criu >= 4.0 is on
// PATH (older ones, like Debian 12's 3.17, fail on kernels with the
// 6.13+ vdso layout). Skipped, with a note, otherwise.
func BenchmarkRuncCRIU(b *testing.B) {
	testutil.RequiresRoot(b)
	runc, err := exec.LookPath("runc")
	if err != nil {
		skipNote(b, "runc not on PATH: no runc+CRIU comparison")
	}
	major, minor, err := criuVersion()
	if err != nil {
		skipNote(b, fmt.Sprintf("no usable criu on PATH (%v): no runc+CRIU comparison", err))
	}
	if major < 4 {
		skipNote(b, fmt.Sprintf("criu %d.%d on PATH is older than 4.0 (it fails on this kernel's vdso layout): no runc+CRIU comparison", major, minor))
	}
	hog := buildBenchHog(b)
	for _, w := range benchWorkloads() {
		b.Run("checkpoint-"+w.name, func(b *testing.B) {
			bundle, s := benchBundle(b, hog, w.args...)
			root := filepath.Join(b.TempDir(), "root")
			var img int64
			b.SetBytes(w.mem)
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				id := benchID(b, i)
				runcStart(b, runc, root, bundle, s, id)
				image := filepath.Join(b.TempDir(), "image")
				b.StartTimer()
				runcCmd(b, runc, root, bundle, "checkpoint", "--image-path", image, id)
				b.StopTimer()
				img += dirBytes(b, image)
				_ = os.RemoveAll(image)
			}
			b.ReportMetric(float64(img)/float64(b.N)/(1<<20), "image-MiB")
		})
		b.Run("restore-"+w.name, func(b *testing.B) {
			bundle, s := benchBundle(b, hog, w.args...)
			root := filepath.Join(b.TempDir(), "root")
			id := benchID(b, 0)
			runcStart(b, runc, root, bundle, s, id)
			image := filepath.Join(b.TempDir(), "image")
			runcCmd(b, runc, root, bundle, "checkpoint", "--image-path", image, id)
			b.SetBytes(w.mem)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				runcCmd(b, runc, root, bundle, "restore", "--detach", "--image-path", image, "--bundle", bundle, id)
				b.StopTimer()
				runcCmd(b, runc, root, bundle, "delete", "--force", id)
				b.StartTimer()
			}
		})
	}
	for _, sz := range benchSizes {
		b.Run("stall-"+sz.name, func(b *testing.B) {
			bundle, s := benchBundle(b, hog, "/bin/benchhog", "stall", strconv.Itoa(sz.mib))
			root := filepath.Join(b.TempDir(), "root")
			id := benchID(b, 0)
			runcStart(b, runc, root, bundle, s, id)
			gaps := filepath.Join(s.Root.Path, "tmp/gaps")
			var stall time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				image := filepath.Join(b.TempDir(), "image")
				start := monotonic()
				runcCmd(b, runc, root, bundle, "checkpoint", "--leave-running", "--image-path", image, id)
				b.StopTimer()
				stall += waitGap(b, gaps, start)
				_ = os.RemoveAll(image)
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(stall.Microseconds())/1e3/float64(b.N), "stall-ms")
		})
	}
}

// skipNote skips a benchmark with a note printed even without -v.
func skipNote(b *testing.B, note string) {
	fmt.Printf("%s: skipped: %s\n", b.Name(), note)
	b.SkipNow()
}

func runcCmd(b testing.TB, runc, root, bundle string, args ...string) {
	b.Helper()
	out, err := os.CreateTemp(b.TempDir(), "out")
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(runc, append([]string{"--root", root}, args...)...)
	cmd.Dir = bundle
	// A file, not a pipe: a detached container inherits it.
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		data, _ := os.ReadFile(out.Name())
		b.Fatalf("runc %s: %v\n%s", strings.Join(args, " "), err, data)
	}
}

// runcStart runs the bundle's container detached with runc and waits for
// its workload.
func runcStart(b testing.TB, runc, root, bundle string, s *specs.Spec, id string) {
	b.Helper()
	_ = os.Remove(filepath.Join(s.Root.Path, "tmp/ready"))
	runcCmd(b, runc, root, bundle, "run", "--detach", "--bundle", bundle, id)
	b.Cleanup(func() {
		_ = exec.Command(runc, "--root", root, "delete", "--force", id).Run()
	})
	waitReady(b, s.Root.Path)
}
