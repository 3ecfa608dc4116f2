package runtime

// Real workloads checkpointed and restored in real containers (own pid,
// mount, net, ipc, uts and cgroup namespaces): Debian's python3, bash with
// coreutils in a pipeline, redis-server with clients, a static Go program and
// a multi-threaded glibc program. Each test asserts that the state the
// program held before the checkpoint is there after the restore (counters
// continue, heap checksums match, pipes lost no byte, PIDs are the same).

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
	"github.com/cryo-run/cryo/oci"
)

// workload is one container of the workload tests.
type workload struct {
	t      *testing.T
	r      *Runtime
	id     string
	bundle string
	spec   *specs.Spec
	c      *Container
	rootfs string
	log    string // the containers' stdout and stderr
}

// newWorkload prepares a bundle whose /usr and /etc are the host's, bind
// mounted read-only, with bin, lib, lib64 and sbin linking into usr as on
// Debian: the container runs Debian's programs with their libraries. The
// rest of the rootfs (/tmp among it) is a writable directory the test reads
// from the host.
func newWorkload(t *testing.T, args ...string) *workload {
	t.Helper()
	testutil.RequiresRoot(t)
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"usr", "etc", "proc", "sys", "dev", "tmp", "root", "opt", "var/tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if target, err := os.Readlink("/" + l); err != nil || !strings.HasPrefix(target, "usr/") {
			testutil.SkipOrFail(t, "the workload tests need a merged-/usr host (/%s -> usr/%s): %v %q", l, l, err, target)
		}
		if err := os.Symlink("usr/"+l, filepath.Join(rootfs, l)); err != nil {
			t.Fatal(err)
		}
	}
	s := DefaultSpec()
	s.Root.Readonly = false
	s.Process.Terminal = false
	s.Process.Args = args
	s.Process.Env = append(s.Process.Env, "HOME=/root", "LANG=C.UTF-8")
	s.Linux.CgroupsPath = workloadCgroup(t)
	for _, d := range []string{"/usr", "/etc"} {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: d, Type: "bind", Source: d, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
	}
	return &workload{t: t, r: newRuntime(t), id: "wl-" + strings.ToLower(sanitize(t.Name())), bundle: bundle, spec: s, rootfs: rootfs}
}

// workloadCgroup is the test's cgroup path, unique to this test process:
// the same test may run at the same time from another checkout.
func workloadCgroup(t *testing.T) string {
	return "/cryo-workloads-" + sanitize(t.Name()) + "-" + strconv.Itoa(os.Getpid())
}

// newBusyboxWorkload is a workload in a busybox rootfs (for static programs).
func newBusyboxWorkload(t *testing.T, args ...string) *workload {
	t.Helper()
	bundle, s := newBundle(t, args...)
	s.Linux.CgroupsPath = workloadCgroup(t)
	return &workload{t: t, r: newRuntime(t), id: "wl-" + strings.ToLower(sanitize(t.Name())), bundle: bundle, spec: s, rootfs: filepath.Join(bundle, "rootfs")}
}

// install copies a host file into the rootfs at dst.
func (w *workload) install(src, dst string, mode os.FileMode) {
	w.t.Helper()
	in, err := os.Open(src)
	if err != nil {
		w.t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(w.rootfs, dst)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	out, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		w.t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		w.t.Fatal(err)
	}
}

// start creates and starts the container; its stdout and stderr go to a log
// file that is printed if the test fails.
func (w *workload) start() {
	w.t.Helper()
	ctx := context.Background()
	w.log = filepath.Join(w.t.TempDir(), "log")
	log := w.openLog()
	defer log.Close()
	c, err := w.r.Create(ctx, w.id, CreateOpts{Bundle: w.bundle, Spec: w.spec, Stdout: log, Stderr: log})
	if err != nil {
		w.t.Fatalf("create: %v", err)
	}
	w.c = c
	w.t.Cleanup(func() {
		if w.t.Failed() {
			if b, err := os.ReadFile(w.log); err == nil && len(b) > 0 {
				w.t.Logf("container output:\n%s", b)
			}
		}
	})
	w.t.Cleanup(func() {
		if w.c != nil {
			_ = w.c.Delete(ctx, true)
		}
	})
	if err := c.Start(ctx); err != nil {
		w.t.Fatalf("start: %v", err)
	}
}

func (w *workload) openLog() *os.File {
	w.t.Helper()
	f, err := os.OpenFile(w.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

// checkpoint checkpoints the container into a new image and returns its
// path. Without LeaveRunning the container must be gone afterwards; with it,
// it must be running and untraced.
func (w *workload) checkpoint(opts CheckpointOpts) string {
	w.t.Helper()
	ctx := context.Background()
	opts.ImagePath = filepath.Join(w.t.TempDir(), "image")
	t0 := time.Now()
	if _, err := w.c.Checkpoint(ctx, opts); err != nil {
		w.t.Fatalf("checkpoint (leave running %v): %v", opts.LeaveRunning, err)
	}
	w.t.Logf("checkpoint (leave running %v) took %v", opts.LeaveRunning, time.Since(t0))
	if opts.LeaveRunning {
		if st, err := w.c.Status(); err != nil || st != Running {
			w.t.Fatalf("status after a --leave-running checkpoint: %v, %v", st, err)
		}
		assertUntraced(w.t, w.c)
		return opts.ImagePath
	}
	if _, err := w.r.Load(w.id); !errors.Is(err, ErrNotExist) {
		w.t.Fatalf("container after checkpoint: got %v, want ErrNotExist", err)
	}
	w.c = nil
	return opts.ImagePath
}

// checkpointLive is a --leave-running checkpoint taken again (up to five
// times) while the image finds a process with a file whose name ends in
// tmpSuffix open: the workloads write their status to a temporary file
// renamed into place, and an image taken in that window names a file that
// no longer exists once the workload went on, so it cannot be restored
// later (a restore opens files by path, as CRIU's does).
func (w *workload) checkpointLive(tmpSuffix string) string {
	w.t.Helper()
	for try := 1; ; try++ {
		image := w.checkpoint(CheckpointOpts{LeaveRunning: true})
		s, err := oci.Inspect(image)
		if err != nil {
			w.t.Fatal(err)
		}
		open := ""
		for _, p := range s.Processes {
			for _, f := range p.Files {
				if strings.HasSuffix(f, tmpSuffix) {
					open = f
				}
			}
		}
		if open == "" || try == 5 {
			return image
		}
		w.t.Logf("checkpoint taken while %s was open: again", open)
	}
}

// remove deletes the running container (to restore an image of it).
func (w *workload) remove() {
	w.t.Helper()
	if err := w.c.Delete(context.Background(), true); err != nil {
		w.t.Fatal(err)
	}
	w.c = nil
}

// restore restores the container from image and checks that its init is
// PID 1 of its namespace.
func (w *workload) restore(image string) {
	w.t.Helper()
	ctx := context.Background()
	log := w.openLog()
	defer log.Close()
	t0 := time.Now()
	c, err := w.r.Restore(ctx, w.id, RestoreOpts{CreateOpts: CreateOpts{Bundle: w.bundle, Stdout: log, Stderr: log}, ImagePath: image})
	if err != nil {
		w.t.Fatalf("restore: %v", err)
	}
	w.t.Logf("restore took %v", time.Since(t0))
	w.c = c
	if st, err := c.Status(); err != nil || st != Running {
		w.t.Fatalf("restored container status %v, %v", st, err)
	}
	if got := nsPid(w.t, c.Pid()); got != 1 {
		w.t.Errorf("restored init is pid %d in its namespace, want 1", got)
	}
}

// fields reads /tmp/<name> of the container as whitespace-separated fields;
// ok is false while the file is missing or does not have n fields.
func (w *workload) fields(name string, n int) ([]string, bool) {
	b, err := os.ReadFile(filepath.Join(w.rootfs, "tmp", name))
	if err != nil {
		return nil, false
	}
	f := strings.Fields(string(b))
	return f, len(f) == n
}

// ints reads the first n fields of /tmp/<name> as integers.
func (w *workload) ints(name string, n, total int) ([]int64, bool) {
	f, ok := w.fields(name, total)
	if !ok {
		return nil, false
	}
	out := make([]int64, n)
	for i := range out {
		v, err := strconv.ParseInt(strings.TrimPrefix(f[i], ":"), 10, 64)
		if err != nil {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// waitInts waits until /tmp/<name> holds ints satisfying ok.
func (w *workload) waitInts(name string, n, total int, ok func([]int64) bool) []int64 {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last []int64
	for time.Now().Before(deadline) {
		if v, found := w.ints(name, n, total); found {
			last = v
			if ok(v) {
				return v
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.t.Fatalf("/tmp/%s never got there: last %v", name, last)
	return nil
}

// heapCheck asks the workload to recompute its heap checksum (it watches for
// /tmp/<prefix>.check) and returns the answer.
func (w *workload) heapCheck(prefix string) string {
	w.t.Helper()
	out := filepath.Join(w.rootfs, "tmp", prefix+".check.out")
	_ = os.Remove(out)
	if err := os.WriteFile(filepath.Join(w.rootfs, "tmp", prefix+".check"), nil, 0o644); err != nil {
		w.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(out); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.t.Fatalf("the workload never answered /tmp/%s.check", prefix)
	return ""
}

// tree returns "nspid comm" of every process of the container, sorted.
func (w *workload) tree() []string {
	w.t.Helper()
	pids, err := w.c.Processes()
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, p := range pids {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm")
		if err != nil {
			continue
		}
		out = append(out, strconv.Itoa(nsPid(w.t, p))+" "+strings.TrimSpace(string(comm)))
	}
	slices.Sort(out)
	return out
}

// threads returns "tid name" of every thread of host pid, by TID in the
// container's namespace, sorted.
func threads(t *testing.T, pid int) []string {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status"))
		if err != nil {
			continue
		}
		var name, tid string
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 && f[0] == "Name:" {
				name = f[1]
			}
			if len(f) > 1 && f[0] == "NSpid:" {
				tid = f[len(f)-1]
			}
		}
		out = append(out, tid+" "+name)
	}
	slices.Sort(out)
	return out
}

// TestWorkloadPython checkpoints Debian's python3 holding 200 MiB of random
// bytes and 200,000 objects: after the restore the counter continues and the
// heap's checksum, recomputed by the restored interpreter, is the one it had.
func TestWorkloadPython(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		testutil.SkipOrFail(t, "Debian's python3 is not installed (apt-get install python3)")
	}
	w := newWorkload(t, "/usr/bin/python3", "/opt/heap.py")
	w.install("testdata/workloads/heap.py", "opt/heap.py", 0o644)
	w.start()
	const status = "py.status"
	var sum string
	read := func() (int64, string, bool) {
		f, ok := w.fields(status, 2)
		if !ok {
			return 0, "", false
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		return n, f[1], err == nil
	}
	waitPy := func(ok func(int64) bool) int64 {
		t.Helper()
		v := w.waitInts(status, 1, 2, func(v []int64) bool { return ok(v[0]) })
		_, s, _ := read()
		if s != sum {
			t.Fatalf("python's startup checksum changed: %s, then %s", sum, s)
		}
		return v[0]
	}
	w.waitInts(status, 1, 2, func(v []int64) bool { return v[0] >= 3 })
	_, sum, _ = read()
	if len(sum) != 64 {
		t.Fatalf("no checksum in %s: %q", status, sum)
	}

	before := waitPy(func(n int64) bool { return true })
	imageLive := w.checkpointLive(".new")
	// The image holds a moment of the call (its end, after a pre-copy).
	after, _, _ := read()
	waitPy(func(n int64) bool { return n >= after+3 })

	image := w.checkpoint(CheckpointOpts{})
	saved, _, _ := read()
	time.Sleep(300 * time.Millisecond)
	if again, _, _ := read(); again != saved {
		t.Fatalf("counter moved while checkpointed: %d -> %d", saved, again)
	}
	w.restore(image)
	next := waitPy(func(n int64) bool { return n != saved })
	if next < saved+1 || next > saved+3 {
		t.Fatalf("counter after restore: %d, want just after %d (it must continue, not restart)", next, saved)
	}
	if got := w.heapCheck("py"); got != sum {
		t.Fatalf("heap checksum after restore: %s, want %s", got, sum)
	}
	waitPy(func(n int64) bool { return n >= next+3 })

	// The --leave-running image restores too, at its own point.
	w.remove()
	w.restore(imageLive)
	back := waitPy(func(n int64) bool { return n < saved })
	if back < before || back > after+2 {
		t.Fatalf("counter restored from the --leave-running image: %d, want between %d and %d (its checkpoint began and ended then)", back, before, after+1)
	}
}

// TestWorkloadShellPipeline checkpoints Debian's bash reading numbers from
// `seq | cat` through two pipes that are full at the checkpoint: after the
// restore no number is lost or repeated (the loop checks each one follows the
// last), the count goes on, and every process has its PID. The count is
// written in place (1<>, no truncation: the numbers only grow longer) so the
// file is never empty when the checkpoint is taken.
func TestWorkloadShellPipeline(t *testing.T) {
	const script = `p=0
seq 1 1000000000 | cat | while read -r i; do
	if [ "$i" -ne $((p+1)) ]; then echo "gap after $p: $i" > /tmp/sh.err; exit 1; fi
	p=$i
	echo "$i" 1<>/tmp/sh.count
done
echo "pipeline ended at $p" > /tmp/sh.err`
	w := newWorkload(t, "/usr/bin/bash", "-c", script)
	w.start()
	count := func(ok func(int64) bool) int64 {
		t.Helper()
		v := w.waitInts("sh.count", 1, 1, func(v []int64) bool { return ok(v[0]) })
		if b, err := os.ReadFile(filepath.Join(w.rootfs, "tmp/sh.err")); err == nil {
			t.Fatalf("pipeline broke: %s", b)
		}
		return v[0]
	}
	first := count(func(n int64) bool { return n >= 1000 })
	procs := w.tree()
	if len(procs) != 4 {
		t.Fatalf("pipeline processes: %v, want bash, seq, cat and the loop's subshell", procs)
	}

	w.checkpoint(CheckpointOpts{LeaveRunning: true})
	mid := count(func(n int64) bool { return n >= first+1000 })

	// seq and cat outrun the loop: both wait in pipe_write, their pipes
	// full, when the checkpoint is taken.
	w.waitWchan("seq", "pipe_write")
	w.waitWchan("cat", "pipe_write")
	image := w.checkpoint(CheckpointOpts{})
	saved, _ := w.ints("sh.count", 1, 1)
	w.restore(image)
	next := count(func(n int64) bool { return n > saved[0]+1000 })
	if next < mid {
		t.Fatalf("count after restore %d, before it %d", next, saved[0])
	}
	if got := w.tree(); !slices.Equal(got, procs) {
		t.Fatalf("processes after restore: %v, want %v", got, procs)
	}
	count(func(n int64) bool { return n > next+1000 })
}

// hostPid returns the host pid of the container's process named comm.
func (w *workload) hostPid(comm string) int {
	w.t.Helper()
	pids, err := w.c.Processes()
	if err != nil {
		w.t.Fatal(err)
	}
	for _, p := range pids {
		c, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm")
		if strings.TrimSpace(string(c)) == comm {
			return p
		}
	}
	w.t.Fatalf("no process %s in the container", comm)
	return 0
}

// waitWchan waits until the container's process named comm waits in the
// kernel function wchan (or a function whose name ends with it).
func (w *workload) waitWchan(comm, wchan string) {
	w.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		pids, err := w.c.Processes()
		if err != nil {
			w.t.Fatal(err)
		}
		for _, p := range pids {
			c, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm")
			if strings.TrimSpace(string(c)) != comm {
				continue
			}
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/wchan")
			if last = string(b); strings.HasSuffix(last, wchan) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.t.Fatalf("%s never waited in %s (last %q)", comm, wchan, last)
}

// TestWorkloadRedis checkpoints Debian's redis-server listening on 127.0.0.1
// in the container's network namespace, holding 100,000 keys, with a bash
// client holding one connection open (/dev/tcp) and counting with INCR. The
// client spends most of its time with its stdout redirected to that
// connection (the shell keeps its real stdout, the log file, at fd 10
// meanwhile): the connection must be restored as a connection, and the log
// as the container's stdio.
// Without --tcp-established the checkpoint is refused (naming the socket) and
// the container keeps serving; with it, the restored server still holds the
// data (redis-cli exec'd after the restore reads it) and the held connection
// goes on counting from where it was.
func TestWorkloadRedis(t *testing.T) {
	if _, err := os.Stat("/usr/bin/redis-server"); err != nil {
		testutil.SkipOrFail(t, "redis-server is not installed (apt-get install redis-server)")
	}
	const script = `redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --dir /tmp \
	--enable-debug-command yes --logfile /tmp/redis.log --daemonize no &
until redis-cli ping >/dev/null 2>&1; do sleep 0.02; done
redis-cli DEBUG POPULATE 100000 key 32 >/dev/null
redis-cli SET greeting hello-before-checkpoint >/dev/null
exec 3<>/dev/tcp/127.0.0.1/6379
while :; do
	{ printf 'INCR ctr\r\n'; sleep 0.02; } >&3
	read -r line <&3
	echo "$line" > /tmp/redis.ctr.new
	mv /tmp/redis.ctr.new /tmp/redis.ctr
done`
	w := newWorkload(t, "/usr/bin/bash", "-c", script)
	w.start()
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(w.rootfs, "tmp/redis.log")); err == nil && t.Failed() {
			t.Logf("redis log:\n%s", b)
		}
	})
	ctr := func(ok func(int64) bool) int64 {
		t.Helper()
		return w.waitInts("redis.ctr", 1, 1, func(v []int64) bool { return ok(v[0]) })[0]
	}
	first := ctr(func(n int64) bool { return n >= 5 })

	ctx := context.Background()
	_, err := w.c.Checkpoint(ctx, CheckpointOpts{ImagePath: filepath.Join(t.TempDir(), "refused")})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:6379") || !strings.Contains(strings.ToLower(err.Error()), "tcp") {
		t.Fatalf("checkpoint of established TCP connections without --tcp-established: got %v, want a refusal naming the connection", err)
	}
	t.Logf("refused as expected: %v", err)
	if st, err := w.c.Status(); err != nil || st != Running {
		t.Fatalf("status after a refused checkpoint: %v, %v", st, err)
	}
	assertUntraced(t, w.c)
	ctr(func(n int64) bool { return n >= first+5 })

	w.checkpoint(CheckpointOpts{LeaveRunning: true, TCPEstablished: true})
	live := ctr(func(n int64) bool { return n >= first+10 })

	server := threads(t, w.hostPid("redis-server"))
	mss := w.heldMSS()
	image := w.checkpoint(CheckpointOpts{TCPEstablished: true})
	saved, _ := w.ints("redis.ctr", 1, 1)
	w.restore(image)
	if got := threads(t, w.hostPid("redis-server")); !slices.Equal(got, server) {
		t.Errorf("redis-server threads after restore: %v, before %v", got, server)
	}
	// The held connection keeps its segment size, not the 536-byte default
	// of a connection that never saw a SYN. (On loopback it was bounded by
	// half the peer's window, 32768, which a repaired connection cannot
	// reproduce exactly: the user MSS it is connected with is at most
	// 32767, less the timestamp option.)
	for i, m := range w.heldMSS() {
		got, _ := strconv.Atoi(strings.TrimPrefix(m, "mss:"))
		want, _ := strconv.Atoi(strings.TrimPrefix(mss[i], "mss:"))
		if got < want-want/100 || got > want {
			t.Errorf("segment size (ss mss:) of the held connection after restore: %d, before %d", got, want)
		}
	}
	next := ctr(func(n int64) bool { return n != saved[0] })
	if next < saved[0]+1 || next > saved[0]+3 || next <= live {
		t.Fatalf("INCR over the held connection after restore: %d, want just after %d", next, saved[0])
	}
	for _, q := range [][2]string{
		{"DBSIZE", "100002"},
		{"GET key:4242", "value:4242" + strings.Repeat("\x00", 32-len("value:4242"))}, // DEBUG POPULATE pads to the size
		{"GET greeting", "hello-before-checkpoint"},
		{"STRLEN key:99999", "32"},
	} {
		if got := w.exec("redis-cli", strings.Fields(q[0])...); got != q[1] {
			t.Errorf("redis-cli %s after restore: %q, want %q", q[0], got, q[1])
		}
	}
	ctr(func(n int64) bool { return n >= next+5 })
}

// heldMSS returns the "mss:" ss reports for both ends of the established
// connections to port 6379 in the container, sorted.
func (w *workload) heldMSS() []string {
	w.t.Helper()
	out := w.exec("ss", "-tniH", "state", "established")
	var mss []string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "mss:") {
			mss = append(mss, f)
		}
	}
	if len(mss) != 2 {
		w.t.Fatalf("ss in the container: want the two ends of the held connection, got:\n%s", out)
	}
	slices.Sort(mss)
	return mss
}

// exec runs args in the container and returns its trimmed stdout.
func (w *workload) exec(name string, args ...string) string {
	w.t.Helper()
	out, err := os.CreateTemp(w.t.TempDir(), "exec")
	if err != nil {
		w.t.Fatal(err)
	}
	defer out.Close()
	p := *w.spec.Process
	p.Args = append([]string{name}, args...)
	proc, err := w.c.Exec(context.Background(), ExecOpts{Process: &p, Stdout: out, Stderr: out})
	if err != nil {
		b, _ := os.ReadFile(out.Name())
		w.t.Fatalf("exec %v: %v (its output: %q)", p.Args, err, b)
	}
	if code, err := proc.Wait(); err != nil || code != 0 {
		b, _ := os.ReadFile(out.Name())
		w.t.Fatalf("exec %v: exit %d, %v: %s", p.Args, code, err, b)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		w.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// buildWorkload builds testdata/workloads/<src> (a .go file statically with
// CGO_ENABLED=0, a .c file with gcc against glibc) and returns the binary.
func buildWorkload(t *testing.T, src string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), filepath.Ext(src)))
	var cmd *exec.Cmd
	switch filepath.Ext(src) {
	case ".go":
		cmd = exec.Command(filepath.Join(goruntime.GOROOT(), "bin", "go"), "build", "-o", out, filepath.Join("testdata/workloads", src))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	case ".c":
		if _, err := exec.LookPath("gcc"); err != nil {
			t.Fatalf("gcc is needed to build the test workloads: %v", err)
		}
		cmd = exec.Command("gcc", "-O2", "-pthread", "-o", out, filepath.Join("testdata/workloads", src))
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", src, err, b)
	}
	return out
}

// TestWorkloadGo checkpoints a static Go program with a 128 MiB heap,
// goroutines passing a token over channels, a ticker, timers and the GC
// running: every counter continues, the heap checksum is the same and the
// threads keep their TIDs.
func TestWorkloadGo(t *testing.T) {
	bin := buildWorkload(t, "goheap.go")
	w := newBusyboxWorkload(t, "/goheap")
	w.install(bin, "goheap", 0o755)
	w.start()
	var sum string
	get := func(ok func([]int64) bool) []int64 {
		t.Helper()
		v := w.waitInts("go.status", 4, 5, ok)
		f, _ := w.fields("go.status", 5)
		if sum == "" {
			sum = f[4]
		} else if f[4] != sum {
			t.Fatalf("startup checksum changed: %s, then %s", sum, f[4])
		}
		return v
	}
	first := get(func(v []int64) bool { return v[1] >= 20 && v[3] >= 2 })

	imageLive := w.checkpointLive(".new")
	// The image holds a moment of the call (its end, after a pre-copy):
	// the next checkpoint comes well after it.
	end, _ := w.ints("go.status", 4, 5)
	get(func(v []int64) bool { return v[0] > end[0]+100 && v[1] > end[1]+5 })

	ths := threads(t, w.c.Pid())
	image := w.checkpoint(CheckpointOpts{})
	saved, _ := w.ints("go.status", 4, 5)
	w.restore(image)
	next := get(func(v []int64) bool { return v[1] != saved[1] })
	for i, name := range []string{"ring passes", "ticks", "timer firings", "GC cycles"} {
		if next[i] < saved[i] {
			t.Errorf("%s after restore: %d, before %d (restarted?)", name, next[i], saved[i])
		}
	}
	if next[1] > saved[1]+20 {
		t.Errorf("ticks jumped from %d to %d across the restore", saved[1], next[1])
	}
	later := get(func(v []int64) bool {
		return v[0] > next[0]+100 && v[1] > next[1]+5 && v[2] > next[2]+5 && v[3] > next[3]+1
	})
	if got := w.heapCheck("go"); got != sum {
		t.Fatalf("heap checksum after restore: %s, want %s", got, sum)
	}
	if got := threads(t, w.c.Pid()); !subset(ths, got) {
		t.Errorf("threads after restore %v, before %v", got, ths)
	}
	t.Logf("before %v, restored %v, later %v", saved, next, later)

	w.remove()
	w.restore(imageLive)
	get(func(v []int64) bool { return v[1] < saved[1] && v[1] > first[1] })
}

// subset reports whether every element of a is in b.
func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// TestWorkloadThreads checkpoints a glibc program whose threads are blocked
// in futex, nanosleep, read on a pipe, epoll_wait and pthread_cond_wait:
// every thread makes progress after the restore, keeps its TID and name, and
// the pipe and eventfd lost nothing in flight.
func TestWorkloadThreads(t *testing.T) {
	bin := buildWorkload(t, "mtblock.c")
	w := newWorkload(t, "/opt/mtblock")
	w.install(bin, "opt/mtblock", 0o755)
	w.start()
	names := []string{"main", "futex", "sleep", "pipe", "epoll", "cond"}
	get := func(ok func([]int64) bool) []int64 {
		t.Helper()
		v := w.waitInts("mt.status", 7, 7, ok)
		if v[6] != 0 {
			t.Fatalf("the program saw %d errors (pipe sequence gap or eventfd overcount): %v", v[6], v)
		}
		return v
	}
	progressed := func(base []int64) func([]int64) bool {
		return func(v []int64) bool {
			for i := 0; i < 6; i++ {
				if v[i] <= base[i] {
					return false
				}
			}
			return true
		}
	}
	first := get(func(v []int64) bool { return v[2] >= 1 })
	ths := threads(t, w.c.Pid())
	if len(ths) != 6 {
		t.Fatalf("threads: %v, want 6", ths)
	}

	w.checkpoint(CheckpointOpts{LeaveRunning: true})
	get(progressed(first))

	waitBlocked(t, w.c.Pid(), map[string]int{
		"futex": unix.SYS_FUTEX, "sleep": unix.SYS_CLOCK_NANOSLEEP, "pipe": unix.SYS_READ,
		"epoll": unix.SYS_EPOLL_WAIT, "cond": unix.SYS_FUTEX,
	})
	image := w.checkpoint(CheckpointOpts{})
	saved, _ := w.ints("mt.status", 7, 7)
	w.restore(image)
	next := get(func(v []int64) bool { return v[0] != saved[0] })
	for i := range names {
		if next[i] < saved[i] {
			t.Errorf("%s counter after restore: %d, before %d", names[i], next[i], saved[i])
		}
	}
	after := get(progressed(next))
	// Every number main wrote reached the pipe thread, and the eventfd
	// delivered every add: what the reader counts trails main by at most
	// what is in flight.
	if d := after[0] - after[3]; d < 0 || d > 2 {
		t.Errorf("pipe reader %d behind main %d", after[3], after[0])
	}
	if d := after[0] - after[4]; d < 0 || d > 2 {
		t.Errorf("eventfd sum %d behind main %d", after[4], after[0])
	}
	if got := threads(t, w.c.Pid()); !slices.Equal(got, ths) {
		t.Errorf("threads after restore %v, before %v", got, ths)
	}
}

// waitBlocked waits until every thread of pid named in want is blocked in
// the system call given for it (/proc/PID/task/TID/syscall), all at once.
func waitBlocked(t *testing.T, pid int, want map[string]int) {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	deadline := time.Now().Add(5 * time.Second)
	var state []string
	for time.Now().Before(deadline) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		state = state[:0]
		blocked := 0
		for _, e := range ents {
			comm, _ := os.ReadFile(filepath.Join(dir, e.Name(), "comm"))
			sc, _ := os.ReadFile(filepath.Join(dir, e.Name(), "syscall"))
			name := strings.TrimSpace(string(comm))
			nr, ok := want[name]
			if !ok {
				continue
			}
			f := strings.Fields(string(sc))
			state = append(state, name+": "+strings.Join(f[:min(len(f), 1)], ""))
			if len(f) > 0 && f[0] == strconv.Itoa(nr) {
				blocked++
			}
		}
		if blocked == len(want) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("the threads were never all blocked in their system calls: %v", state)
}
