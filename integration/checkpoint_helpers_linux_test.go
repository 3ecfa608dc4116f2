package integration

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cryo-run/cryo/integration/internal/harness"
)

// tokenLoop is the workload of the checkpoint tests: a busybox shell that draws a random token
// once, then counts forever, publishing "<its pid> <token> <count>" atomically in /tmp/counter.
// The token lives only in the shell's memory: a container that shows the same token with a
// count at least the checkpointed one was restored, not restarted (a restart draws a new token
// and counts from 1).
// The files live in /state: a host directory bind-mounted by the containerd tests (a volume,
// which a restore mounts again, so a checkpoint taken while the shell has /state/counter.new
// open restores without its rootfs changes), the bundle's rootfs for the cryo CLI tests.
// The PID written is the shell's real one in its namespace (from /proc/self/stat, read by the
// shell itself), not $$, which a restored shell would remember whatever its PID.
const tokenLoop = `tok=$RANDOM$RANDOM$RANDOM; i=0; while :; do i=$((i+1)); read p _ < /proc/self/stat; echo "$p $tok $i" > /state/counter.new; mv /state/counter.new /state/counter; sleep 0.05; done`

// tokenTreeLoop is tokenLoop with a long-lived child (a sleep started first) whose PID a restore
// must also keep.
const tokenTreeLoop = `sleep 1000000 & ` + tokenLoop

// counter is one reading of /tmp/counter.
type reading struct {
	pid   int    // the shell's PID in its namespace
	token string // drawn once at start
	n     int    // the count
}

func (c reading) String() string { return fmt.Sprintf("pid %d token %s count %d", c.pid, c.token, c.n) }

// readToken reads /tmp/counter of the container whose init has host PID pid, through
// /proc/PID/root (no exec into the container).
func readToken(pid int) (reading, error) {
	return readTokenFile(fmt.Sprintf("/proc/%d/root/state/counter", pid))
}

// readTokenFile reads a counter file.
func readTokenFile(p string) (reading, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return reading{}, err
	}
	f := strings.Fields(string(data))
	if len(f) != 3 {
		return reading{}, fmt.Errorf("counter file holds %q", data)
	}
	pid, err1 := strconv.Atoi(f[0])
	n, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return reading{}, fmt.Errorf("counter file holds %q", data)
	}
	return reading{pid: pid, token: f[1], n: n}, nil
}

// waitToken waits until the counter of the container (init host PID pid) reaches at least
// min, and returns that reading.
func waitToken(t *testing.T, pid, min int) reading {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := readToken(pid)
		if err == nil && c.n >= min {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter of pid %d: got %+v (err %v), want a count >= %d", pid, c, err, min)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tokenTick is the counter's period: its count cannot grow faster than one per tokenTick.
const tokenTick = 50 * time.Millisecond

// assertContinues checks that the container whose init has host PID pid runs the very shell
// that was checkpointed: same token, same PID as the checkpointed writer, init PID 1 in its
// namespace, a count that starts within [from.n, upto+1+ticks since restoreStart] (upto: the
// last count the checkpointed process can have reached, or -1 for no upper bound) and then
// keeps going up.
func assertContinues(t *testing.T, pid int, from reading, upto int, restoreStart time.Time) {
	t.Helper()
	first, err := readToken(pid)
	deadline := time.Now().Add(10 * time.Second)
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		first, err = readToken(pid)
	}
	if err != nil {
		t.Fatalf("restored container (pid %d): %v", pid, err)
	}
	if first.token != from.token || first.pid != from.pid {
		t.Fatalf("restored container runs another shell: got %v, checkpointed %v", first, from)
	}
	if ns := nsPid(t, pid); ns != 1 {
		t.Fatalf("restored init (host pid %d) is pid %d in its namespace, want 1", pid, ns)
	}
	max := upto + 1 + int(time.Since(restoreStart)/tokenTick)
	if first.n < from.n || (upto >= 0 && first.n > max) {
		t.Fatalf("restored counter starts at %d, want within [%d, %d]", first.n, from.n, max)
	}
	later := waitToken(t, pid, first.n+3)
	if later.token != from.token {
		t.Fatalf("token changed after restore: %v then %v", first, later)
	}
	t.Logf("continues: checkpointed %v, restored at %d, then %d", from, first.n, later.n)
}

// nsPid returns the PID of host PID pid in its innermost PID namespace (NSpid in status).
func nsPid(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				t.Fatalf("NSpid of %d: %q", pid, line)
			}
			return n
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return 0
}

// criuTarType is the media type containerd gives the blob it makes of the directory a shim
// checkpoints into (whatever the runtime wrote there: for cryo, our OCI layout).
const criuTarType = "application/vnd.containerd.container.criu.checkpoint.criu.tar"

// imageDigest returns the target digest of image ref in d's image store.
func imageDigest(t *testing.T, d *harness.Daemon, ref string) string {
	t.Helper()
	out := mustCtr(t, d, "images", "ls")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	t.Fatalf("image %s not in the store:\n%s", ref, out)
	return ""
}

// checkpointLayout extracts the task checkpoint of containerd checkpoint image ref (the
// criu.tar blob of its index) into a fresh directory and returns it.
func checkpointLayout(t *testing.T, d *harness.Daemon, ref string) string {
	t.Helper()
	var index ocispec.Index
	if err := json.Unmarshal([]byte(mustCtr(t, d, "content", "get", imageDigest(t, d, ref))), &index); err != nil {
		t.Fatalf("index of %s: %v", ref, err)
	}
	var blob string
	for _, m := range index.Manifests {
		if m.MediaType == criuTarType {
			blob = m.Digest.String()
		}
	}
	if blob == "" {
		t.Fatalf("checkpoint %s has no %s in its index: %+v", ref, criuTarType, index.Manifests)
	}
	dir := t.TempDir()
	if err := untarTo(strings.NewReader(mustCtr(t, d, "content", "get", blob)), dir); err != nil {
		t.Fatalf("unpack %s of %s: %v", blob, ref, err)
	}
	return dir
}

// untar unpacks the regular files and directories of a tar stream under dir.
func untarTo(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + h.Name)
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

// ckSummary is the part of `cryo inspect --format json` the tests check.
type ckSummary struct {
	Name           string `json:"name"`
	ContainerID    string `json:"containerID"`
	FormatRevision int    `json:"formatRevision"`
	Manifest       string `json:"manifest"`
	Parent         string `json:"parent"`
	Host           struct {
		Kernel      string   `json:"kernel"`
		Arch        string   `json:"arch"`
		CPUFeatures []string `json:"cpuFeatures"`
	} `json:"host"`
	Processes []struct {
		Pid      int      `json:"pid"`
		PPid     int      `json:"ppid"`
		Comm     string   `json:"comm"`
		Args     []string `json:"args"`
		UID      uint32   `json:"uid"`
		Cwd      string   `json:"cwd"`
		Threads  int      `json:"threads"`
		MemBytes uint64   `json:"memBytes"`
	} `json:"processes"`
	Layers   []ckLayer `json:"layers"`
	Verified bool      `json:"verified"`
}

// ckLayer is a layer of a checkpoint summary.
type ckLayer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Path      string `json:"path"`
}

// inspect runs `cryo inspect --format json` on a checkpoint (layout dir or archive).
func cryoInspect(t *testing.T, image string) ckSummary {
	t.Helper()
	out, err := exec.Command(env.bins.Cryo, "inspect", "--format", "json", image).Output()
	if err != nil {
		t.Fatalf("cryo inspect %s: %v%s", image, err, exitStderr(err))
	}
	var s ckSummary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("cryo inspect %s: %v:\n%s", image, err, out)
	}
	return s
}

func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// assertCounterImage checks that a checkpoint summary is that of the counter shell of
// container id: PID 1 running sh, with its sleep or mv child possibly.
func assertCounterImage(t *testing.T, s ckSummary, id string) {
	t.Helper()
	if s.ContainerID != id {
		t.Errorf("checkpoint records container %q, want %q", s.ContainerID, id)
	}
	if len(s.Processes) == 0 || s.Processes[0].Pid != 1 || s.Processes[0].Comm != "sh" {
		t.Errorf("checkpoint processes %+v, want PID 1 sh first", s.Processes)
	}
	if len(s.Layers) < 2 {
		t.Errorf("checkpoint has layers %+v, want state and pages", s.Layers)
	}
}

// sleeperPid returns the PID, in the container's namespace, of the `sleep 1000000` child of
// the init whose host PID is pid.
func sleeperPid(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range strings.Fields(string(data)) {
		child, _ := strconv.Atoi(c)
		if args := harness.Cmdline(child); len(args) == 2 && args[0] == "sleep" && args[1] == "1000000" {
			return nsPid(t, child)
		}
	}
	t.Fatalf("init %d has no child sleep 1000000 (children %q)", pid, data)
	return 0
}

// waitGone waits until host PID pid has exited (gone, or a zombie not yet reaped).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && strings.HasPrefix(string(data[i+1:]), " Z") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running: %s", pid, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// stateDirs maps container ids to the host directory mounted at /state in them.
var stateDirs sync.Map

// stateMount makes the host directory for container id's /state and returns the ctr run
// flag that mounts it.
func stateMount(t *testing.T, id string) string {
	t.Helper()
	dir := t.TempDir()
	stateDirs.Store(id, dir)
	return "type=bind,src=" + dir + ",dst=/state,options=rbind:rw"
}

// forgetCounter removes the counter file the (gone) container id left in its /state, so that
// what a restored container shows is what it wrote.
func forgetCounter(t *testing.T, id string) {
	t.Helper()
	if dir, ok := stateDirs.Load(id); ok {
		if err := os.Remove(filepath.Join(dir.(string), "counter")); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}
