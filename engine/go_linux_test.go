package engine

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/integration/testutil"
)

func buildGo(t testing.TB, src string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), strings.TrimSuffix(src, ".go"))
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, filepath.Join("testdata", src))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", src, err, b)
	}
	return out
}

func readInts(path string, n int) ([]int64, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	f := strings.Fields(string(data))
	if len(f) != n {
		return nil, false
	}
	out := make([]int64, n)
	for i := range f {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// TestDumpRestoreGo checkpoints a static Go program: threads, futexes,
// sigaltstacks, the epoll+eventfd netpoller, timers and signal handling.
func TestDumpRestoreGo(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildGo(t, "gocounter.go")
	dir := t.TempDir()
	status := filepath.Join(dir, "status")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, status)
	waitFor(t, "the Go program to tick", func() bool {
		v, ok := readInts(status, 5)
		return ok && v[0] > 50
	})
	imgDir := filepath.Join(dir, "img")
	res, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: imgDir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	before, _ := readInts(status, 5)
	t.Logf("dumped %d threads, %d bytes of pages", res.Processes[0].Threads, res.PageBytes)
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: imgDir, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	var after []int64
	waitFor(t, "the restored Go program to tick on", func() bool {
		v, ok := readInts(status, 5)
		after = v
		return ok && v[0] > before[0]+50 && v[1] > before[1]+50
	})
	if after[0] > before[0]+100000 || after[2] != 1 || after[4] != 1 {
		t.Fatalf("status %v after restore, before %v", after, before)
	}
	if err := unix.Kill(stub.Process.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SIGUSR1 to reach the restored signal.Notify", func() bool {
		v, ok := readInts(status, 5)
		return ok && v[3] == before[3]+1
	})
}

// socketFds counts the socket fds of pid.
func socketFds(pid int) int {
	ents, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

func httpGet(t *testing.T, url string) (served, ticks int64) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscan(string(body), &served, &ticks); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return served, ticks
}

// TestDumpRestoreGoHTTPServer checkpoints an idle Go HTTP server (its
// listening socket, epoll, timers) and serves requests again after restore.
func TestDumpRestoreGoHTTPServer(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildGo(t, "gohttp.go")
	dir := t.TempDir()
	portFile := filepath.Join(dir, "port")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, portFile)
	var url string
	waitFor(t, "the server to listen", func() bool {
		data, err := os.ReadFile(portFile)
		url = "http://127.0.0.1:" + string(data) + "/"
		return err == nil && len(data) > 0
	})
	s1, t1 := httpGet(t, url)
	s2, t2 := httpGet(t, url)
	if s2 != s1+1 || t2 < t1 {
		t.Fatalf("server answers %d %d then %d %d", s1, t1, s2, t2)
	}
	// Idle: the server has closed the connections of those requests (a
	// connection half closed by the client would be refused, by design).
	waitFor(t, "the server to close its connections", func() bool { return socketFds(cmd.Process.Pid) == 1 })
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	s3, t3 := httpGet(t, url)
	if s3 != s2+1 || t3 < t2 || t3 > t2+100000 {
		t.Fatalf("restored server answers %d %d, want %d and ticks from %d on", s3, t3, s2+1, t2)
	}
}
