package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cryo-run/cryo/integration/internal/harness"
)

// memProgram is the benchmark workload: it fills -mb MiB with data (every page present and
// distinct), writes /tmp/ready; whenever /tmp/verify appears it checks every page and writes
// "bad N" to /tmp/verified, and whenever /tmp/dirty appears it rewrites 1% of its pages and
// writes /tmp/dirtied.
const memProgram = `package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	mb := flag.Int("mb", 512, "MiB to hold")
	flag.Parse()
	const page = 4096
	mem := make([]byte, *mb<<20)
	for i := 0; i < len(mem); i += page {
		mem[i] = byte(i / page)
		mem[i+1] = byte(i / page >> 8)
	}
	os.WriteFile("/tmp/ready", []byte("1"), 0o644)
	round := byte(0)
	for {
		time.Sleep(20 * time.Millisecond)
		if _, err := os.Stat("/tmp/verify"); err == nil {
			bad := 0
			for i := 0; i < len(mem); i += page {
				if mem[i] != byte(i/page) || mem[i+1] != byte(i/page>>8) {
					bad++
				}
			}
			os.Remove("/tmp/verify")
			os.WriteFile("/tmp/verified", []byte(fmt.Sprintf("bad %d", bad)), 0o644)
		}
		if _, err := os.Stat("/tmp/dirty"); err != nil {
			continue
		}
		round++
		pages := len(mem) / page
		for p := 0; p < pages/100; p++ {
			mem[(p*100)*page+2] = round
		}
		os.Remove("/tmp/dirty")
		os.WriteFile("/tmp/dirtied", []byte{round}, 0o644)
	}
}
`

const memImage = "localhost/cryo-it/mem:latest"

var memImageOnce struct {
	sync.Once
	tar string
	err error
}

// memImageTar builds the workload image once per test binary.
func memImageTar(b testing.TB) string {
	memImageOnce.Do(func() {
		img, err := harness.GoProgramSourceImage(context.Background(), memImage, "mem", memProgram, false)
		if err != nil {
			memImageOnce.err = err
			return
		}
		dir, err := os.MkdirTemp("", "cryo-it-images-mem-")
		if err != nil {
			memImageOnce.err = err
			return
		}
		memImageOnce.tar = filepath.Join(dir, "mem.tar")
		memImageOnce.err = img.WriteArchiveFile(memImageOnce.tar)
	})
	if memImageOnce.err != nil {
		b.Fatal(memImageOnce.err)
	}
	return memImageOnce.tar
}

// waitFile waits until path exists.
func waitFile(b testing.TB, path string) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dirSize is the size of the regular files under dir.
func dirSize(b *testing.B, dir string) int64 {
	b.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkCtrCheckpointRestore times, for a container holding 512 MiB, on each checkpoint
// runtime: `ctr c checkpoint --task` (pause, checkpoint into containerd's directory, tar into
// the content store, resume), `ctr c restore --live` (until the task runs), a checkpoint of the
// same memory through the API into a directory (image_path: no tar into the store), and an
// incremental checkpoint (parent_path) after 1% of the memory changed: its time and the bytes
// of its own layers next to the full image's.
func BenchmarkCtrCheckpointRestore(b *testing.B) {
	d := env.daemon
	if d == nil {
		b.Skip("no daemon (-short or not root)")
	}
	if _, err := d.Ctr(b.Context(), "images", "import", "--snapshotter", d.Snapshotter, memImageTar(b)); err != nil {
		b.Fatal(err)
	}
	mb := 512
	for _, r := range ckRuntimes {
		b.Run(r.name, func(b *testing.B) {
			var ckpt, restore, direct, incr time.Duration
			var storeBytes, fullBytes, ownBytes int64
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("bench-ck-%s-%d", r.name, i)
				ref := "localhost/cryo-it/bench-ck-" + r.name + ":" + strconv.Itoa(i)
				args := append([]string{"run", "-d"}, r.flags(d)...)
				if _, err := d.Ctr(b.Context(), append(args, memImage, id, "/bin/mem", "-mb", strconv.Itoa(mb))...); err != nil {
					b.Fatal(err)
				}
				newID := id + "-r"
				cleanup := func() {
					for _, c := range []string{id, newID} {
						d.Ctr(context.Background(), "tasks", "rm", "-f", c)
						d.Ctr(context.Background(), "containers", "rm", c)
					}
					d.Ctr(context.Background(), "images", "rm", ref, ref+"-full", ref+"-delta")
				}
				ti, ok := benchTask(b, d, id)
				if !ok {
					cleanup()
					b.Fatalf("task %s not running", id)
				}
				waitFile(b, fmt.Sprintf("/proc/%d/root/tmp/ready", ti))
				if i == 0 {
					if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", ti)); err == nil {
						for _, l := range strings.Split(string(st), "\n") {
							if strings.HasPrefix(l, "VmRSS:") {
								b.Logf("workload %s", strings.Join(strings.Fields(l), " "))
							}
						}
					}
				}

				start := time.Now()
				if _, err := d.Ctr(b.Context(), "containers", "checkpoint", "--task", id, ref); err != nil {
					cleanup()
					b.Fatal(err)
				}
				ckpt += time.Since(start)
				storeBytes = checkpointBlobSize(b, d, ref)
				d.Ctr(b.Context(), "tasks", "rm", "-f", id)
				d.Ctr(b.Context(), "containers", "rm", id)

				start = time.Now()
				if _, err := d.Ctr(b.Context(), "containers", "restore", "--live", newID, ref); err != nil {
					cleanup()
					b.Fatal(err)
				}
				restore += time.Since(start)
				rpid, ok := benchTask(b, d, newID)
				if !ok {
					cleanup()
					b.Fatalf("restored task %s not running", newID)
				}
				// the restored memory is the checkpointed one, page for page
				if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/tmp/verify", rpid), nil, 0o644); err != nil {
					cleanup()
					b.Fatal(err)
				}
				verified := fmt.Sprintf("/proc/%d/root/tmp/verified", rpid)
				waitFile(b, verified)
				if v, _ := os.ReadFile(verified); string(v) != "bad 0" {
					cleanup()
					b.Fatalf("restored memory: %s", v)
				}

				// full and incremental checkpoints into directories, through the API
				cl, err := containerdClient(d)
				if err != nil {
					cleanup()
					b.Fatal(err)
				}
				ctx := namespacedCtx(b.Context(), d)
				ctr, err := cl.LoadContainer(ctx, newID)
				if err != nil {
					cleanup()
					b.Fatal(err)
				}
				task, err := ctr.Task(ctx, nil)
				if err != nil {
					cleanup()
					b.Fatal(err)
				}
				dir := b.TempDir()
				full, delta := filepath.Join(dir, "full"), filepath.Join(dir, "delta")
				start = time.Now()
				_, err = task.Checkpoint(ctx, containerd.WithCheckpointName(ref+"-full"), withOptions(func(o *options.CheckpointOptions) { o.ImagePath = full }))
				if err != nil {
					cleanup()
					b.Fatal(err)
				}
				direct += time.Since(start)
				if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/tmp/dirty", rpid), nil, 0o644); err != nil {
					cleanup()
					b.Fatal(err)
				}
				waitFile(b, fmt.Sprintf("/proc/%d/root/tmp/dirtied", rpid))
				start = time.Now()
				_, err = task.Checkpoint(ctx, containerd.WithCheckpointName(ref+"-delta"), withOptions(func(o *options.CheckpointOptions) {
					o.ImagePath, o.ParentPath = delta, full
				}))
				if err != nil {
					cleanup()
					b.Fatal(err)
				}
				incr += time.Since(start)
				fullBytes = dirSize(b, full)
				ownBytes = dirSize(b, delta) - fullBytes // the parent's blobs are hardlinked in
				cl.Close()
				cleanup()
			}
			n := float64(b.N)
			b.ReportMetric(float64(ckpt.Milliseconds())/n, "ms-ctr-checkpoint")
			b.ReportMetric(float64(restore.Milliseconds())/n, "ms-ctr-restore-live")
			b.ReportMetric(float64(direct.Milliseconds())/n, "ms-checkpoint-to-dir")
			b.ReportMetric(float64(incr.Milliseconds())/n, "ms-incremental-1pct")
			b.ReportMetric(float64(storeBytes)/(1<<20), "MiB-in-store")
			b.ReportMetric(float64(fullBytes)/(1<<20), "MiB-full")
			b.ReportMetric(float64(ownBytes)/(1<<20), "MiB-incremental-own")
		})
	}
}

// benchTask returns the host PID of a running task.
func benchTask(b *testing.B, d *harness.Daemon, id string) (int, bool) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, err := d.Ctr(b.Context(), "tasks", "ls")
		if err == nil {
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
					pid, _ := strconv.Atoi(f[1])
					return pid, true
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, false
}

// checkpointBlobSize returns the size of the task checkpoint blob (the tar containerd made of
// the directory the runtime wrote) of checkpoint image ref.
func checkpointBlobSize(b *testing.B, d *harness.Daemon, ref string) int64 {
	b.Helper()
	out, err := d.Ctr(b.Context(), "images", "ls")
	if err != nil {
		b.Fatal(err)
	}
	var dgst string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == ref {
			dgst = f[2]
		}
	}
	raw, err := d.Ctr(b.Context(), "content", "get", dgst)
	if err != nil {
		b.Fatal(err)
	}
	var index ocispec.Index
	if err := json.Unmarshal([]byte(raw), &index); err != nil {
		b.Fatal(err)
	}
	for _, m := range index.Manifests {
		if m.MediaType == criuTarType {
			return m.Size
		}
	}
	b.Fatalf("no task checkpoint in %s", ref)
	return 0
}
