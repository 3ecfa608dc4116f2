package runtime

// Workload benchmarks (make bench): checkpoint, restore and the
// --leave-running stall of the containers people run rather than a memory
// hog: a 64-thread process, a static Go program with a 1 GiB live heap and
// goroutines running, and an echo server holding 1,000 TCP connections from
// a client in the same container (its own network namespace). Every restore
// is checked: the workload is asked to verify its state (memory patterns,
// heap checksum, every thread or connection answering) and the benchmark
// fails if it does not. The same, with runc + CRIU, when criu >= 4.0 is on
// PATH.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/integration/testutil"
)

const (
	benchThreadMiB = 4    // touched by each of the 63 workers
	benchGoHeapMiB = 1024 // live heap of the Go program
	benchConns     = 1000 // TCP connections held open
)

// heavyWorkload is one container of the workload benchmarks.
type heavyWorkload struct {
	name string
	src  string   // testdata/<src>: .c built static with gcc, .go with CGO_ENABLED=0
	args []string // the binary is /bin/<src without extension>
	mem  int64    // touched bytes (for MB/s)
	tcp  bool     // holds established TCP connections
	// check validates the answer the workload wrote to /tmp/check.out.
	check func(b testing.TB, rootfs, out string)
}

func heavyWorkloads() []heavyWorkload {
	okLine := func(want string) func(testing.TB, string, string) {
		return func(b testing.TB, _, out string) {
			b.Helper()
			if f := strings.Fields(out); len(f) < 2 || f[0] != "ok" || f[1] != want {
				b.Fatalf("workload check: %q, want \"ok %s ...\"", out, want)
			}
		}
	}
	return []heavyWorkload{
		{
			name: "threads64", src: "benchthreads.c",
			args: []string{"/bin/benchthreads", strconv.Itoa(benchThreadMiB)},
			mem:  63 * benchThreadMiB << 20,
			// 64 threads, every worker woke from its system call and
			// found its memory intact.
			check: okLine("64"),
		},
		{
			name: "go1GiB", src: "benchgoheap.go",
			args: []string{"/bin/benchgoheap", strconv.Itoa(benchGoHeapMiB)},
			mem:  benchGoHeapMiB << 20,
			check: func(b testing.TB, rootfs, out string) {
				b.Helper()
				sum, err := os.ReadFile(filepath.Join(rootfs, "tmp/sum"))
				if err != nil {
					b.Fatal(err)
				}
				f := strings.Fields(out)
				if len(f) != 3 || f[0] != strings.TrimSpace(string(sum)) {
					b.Fatalf("go heap check: %q, want the startup checksum %s", out, sum)
				}
				ring, _ := strconv.Atoi(f[1])
				ticks, _ := strconv.Atoi(f[2])
				if ring < 100 || ticks < 5 {
					b.Fatalf("go goroutines stalled: %d ring passes, %d ticks during the check", ring, ticks)
				}
			},
		},
		{
			name: fmt.Sprintf("conns%d", benchConns), src: "benchconns.c",
			args: []string{"/bin/benchconns", strconv.Itoa(benchConns)},
			tcp:  true,
			// Every connection echoed its next sequence number.
			check: okLine(strconv.Itoa(benchConns)),
		},
	}
}

// buildHeavy builds the workload's program.
func buildHeavy(b testing.TB, src string) string {
	b.Helper()
	name := strings.TrimSuffix(src, filepath.Ext(src))
	out := filepath.Join(b.TempDir(), name)
	var cmd *exec.Cmd
	if filepath.Ext(src) == ".go" {
		cmd = exec.Command(filepath.Join(goruntime.GOROOT(), "bin", "go"), "build", "-o", out, "testdata/"+src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	} else {
		if _, err := exec.LookPath("gcc"); err != nil {
			b.Fatalf("gcc is needed to build the benchmark programs: %v", err)
		}
		cmd = exec.Command("gcc", "-static", "-O2", "-pthread", "-o", out, "testdata/"+src)
	}
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build %s: %v\n%s", src, err, o)
	}
	return out
}

// buildHeavyAll builds every workload's program, by source name, in the
// top-level benchmark (a sub-benchmark's TempDir is removed after its
// first, one-iteration run).
func buildHeavyAll(b testing.TB) map[string]string {
	b.Helper()
	bins := map[string]string{}
	for _, w := range heavyWorkloads() {
		bins[w.src] = buildHeavy(b, w.src)
	}
	return bins
}

// heavyBundle writes a busybox bundle holding the workload's program (from
// bins), with room for its file descriptors and a cgroup unique to this
// benchmark and process.
func heavyBundle(b testing.TB, w heavyWorkload, bins map[string]string) (string, *specs.Spec) {
	b.Helper()
	bin := bins[w.src]
	bundle, s := benchBundle(b, "", w.args...)
	benchCopy(b, bin, filepath.Join(s.Root.Path, "bin", filepath.Base(w.args[0])))
	s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 4096, Soft: 4096}}
	s.Linux.CgroupsPath = "/cryo-perf-bench5-" + sanitize(b.Name()) + "-" + strconv.Itoa(os.Getpid())
	// config.json for runc (the runtime is handed s itself).
	rootfs := s.Root.Path
	s.Root.Path = "rootfs"
	data, err := json.MarshalIndent(s, "", "\t")
	s.Root.Path = rootfs
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	return bundle, s
}

// checkHeavy asks the workload to verify itself (/tmp/check) and fails the
// benchmark unless its answer passes w.check.
func checkHeavy(b testing.TB, w heavyWorkload, rootfs string) {
	b.Helper()
	out := filepath.Join(rootfs, "tmp/check.out")
	if err := os.Remove(out); err != nil && !os.IsNotExist(err) {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "tmp/check"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(out); err == nil && len(data) > 0 && data[len(data)-1] == '\n' {
			w.check(b, rootfs, strings.TrimSpace(string(data)))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatalf("%s never answered /tmp/check", w.name)
}

// BenchmarkWorkloadCheckpoint checkpoints each workload's container (runc's
// default: stopped once the image is written), a fresh one per iteration
// started outside the timer.
func BenchmarkWorkloadCheckpoint(b *testing.B) {
	testutil.RequiresRoot(b)
	bins := buildHeavyAll(b)
	for _, w := range heavyWorkloads() {
		b.Run(w.name, func(b *testing.B) {
			bundle, s := heavyBundle(b, w, bins)
			b.SetBytes(w.mem)
			benchCheckpoints(b, bundle, s, CheckpointOpts{TCPEstablished: w.tcp})
		})
	}
}

// BenchmarkWorkloadRestore restores each workload from one checkpoint, again
// and again; after every restore, outside the timer, the workload verifies
// its state and the restored container is deleted.
func BenchmarkWorkloadRestore(b *testing.B) {
	testutil.RequiresRoot(b)
	bins := buildHeavyAll(b)
	for _, w := range heavyWorkloads() {
		b.Run(w.name, func(b *testing.B) {
			bundle, s := heavyBundle(b, w, bins)
			r := newBenchRuntime(b)
			ctx := context.Background()
			id := benchID(b, 0)
			c := startBench(b, r, id, bundle, s)
			image := filepath.Join(b.TempDir(), "image")
			if _, err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: image, TCPEstablished: w.tcp}); err != nil {
				b.Fatalf("checkpoint: %v", err)
			}
			b.SetBytes(w.mem)
			benchRestores(b, r, id, RestoreOpts{CreateOpts: CreateOpts{Bundle: bundle, Spec: s}, ImagePath: image}, func() { checkHeavy(b, w, s.Root.Path) })
		})
	}
}

// BenchmarkWorkloadStall measures what a --leave-running checkpoint costs
// each workload: a thread of it logs every gap over 1 ms in its 100 us
// CLOCK_MONOTONIC loop, and the largest that ends after the checkpoint began
// is the stall (stall-ms); ms/op is the whole checkpoint. Once the
// iterations are done the workload, still running, verifies its state.
func BenchmarkWorkloadStall(b *testing.B) {
	testutil.RequiresRoot(b)
	bins := buildHeavyAll(b)
	for _, w := range heavyWorkloads() {
		b.Run(w.name, func(b *testing.B) {
			bundle, s := heavyBundle(b, w, bins)
			r := newBenchRuntime(b)
			c := startBench(b, r, benchID(b, 0), bundle, s)
			b.SetBytes(w.mem)
			benchStalls(b, c, filepath.Join(s.Root.Path, "tmp/gaps"), CheckpointOpts{TCPEstablished: w.tcp})
			checkHeavy(b, w, s.Root.Path)
		})
	}
}

// BenchmarkWorkloadRuncCRIU is the comparison point for the workloads:
// runc with CRIU (--tcp-established for the connections), when a criu >=
// 4.0 is on PATH; skipped with a note otherwise (see BenchmarkRuncCRIU).
func BenchmarkWorkloadRuncCRIU(b *testing.B) {
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
	bins := buildHeavyAll(b)
	for _, w := range heavyWorkloads() {
		var tcp []string
		if w.tcp {
			tcp = []string{"--tcp-established"}
		}
		b.Run("checkpoint-"+w.name, func(b *testing.B) {
			bundle, s := heavyBundle(b, w, bins)
			root := filepath.Join(b.TempDir(), "root")
			var img int64
			b.SetBytes(w.mem)
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				id := benchID(b, i)
				runcStart(b, runc, root, bundle, s, id)
				image := filepath.Join(b.TempDir(), "image")
				b.StartTimer()
				runcCmd(b, runc, root, bundle, append(append([]string{"checkpoint"}, tcp...), "--image-path", image, id)...)
				b.StopTimer()
				img += dirBytes(b, image)
				_ = os.RemoveAll(image)
			}
			b.ReportMetric(float64(img)/float64(b.N)/(1<<20), "image-MiB")
		})
		b.Run("restore-"+w.name, func(b *testing.B) {
			bundle, s := heavyBundle(b, w, bins)
			root := filepath.Join(b.TempDir(), "root")
			id := benchID(b, 0)
			runcStart(b, runc, root, bundle, s, id)
			image := filepath.Join(b.TempDir(), "image")
			runcCmd(b, runc, root, bundle, append(append([]string{"checkpoint"}, tcp...), "--image-path", image, id)...)
			b.SetBytes(w.mem)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				runcCmd(b, runc, root, bundle, append(append([]string{"restore", "--detach"}, tcp...), "--image-path", image, "--bundle", bundle, id)...)
				b.StopTimer()
				checkHeavy(b, w, s.Root.Path)
				runcCmd(b, runc, root, bundle, "delete", "--force", id)
				b.StartTimer()
			}
		})
		b.Run("stall-"+w.name, func(b *testing.B) {
			bundle, s := heavyBundle(b, w, bins)
			root := filepath.Join(b.TempDir(), "root")
			id := benchID(b, 0)
			runcStart(b, runc, root, bundle, s, id)
			gaps := filepath.Join(s.Root.Path, "tmp/gaps")
			var stall time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				image := filepath.Join(b.TempDir(), "image")
				start := monotonic()
				runcCmd(b, runc, root, bundle, append(append([]string{"checkpoint", "--leave-running"}, tcp...), "--image-path", image, id)...)
				b.StopTimer()
				stall += waitGap(b, gaps, start)
				_ = os.RemoveAll(image)
				b.StartTimer()
			}
			b.StopTimer()
			checkHeavy(b, w, s.Root.Path)
			b.ReportMetric(float64(stall.Microseconds())/1e3/float64(b.N), "stall-ms")
		})
	}
}
