package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/integration/testutil"
)

func TestMain(m *testing.M) {
	if Reexec() {
		return
	}
	os.Exit(m.Run())
}

// newBundle writes a bundle with a busybox rootfs and the default spec,
// adjusted for tests (no terminal, writable root, unique cgroup path).
func newBundle(t *testing.T, args ...string) (string, *specs.Spec) {
	t.Helper()
	testutil.RequiresRoot(t)
	bundle := t.TempDir()
	testutil.BusyboxRootfs(t, filepath.Join(bundle, "rootfs"))
	s := DefaultSpec()
	s.Root.Readonly = false
	s.Process.Terminal = false
	s.Process.Args = args
	s.Linux.CgroupsPath = fmt.Sprintf("/cryo-runtime-test-%d-%s", os.Getpid(), sanitize(t.Name()))
	return bundle, s
}

func sanitize(name string) string {
	return strings.NewReplacer("/", "-", " ", "_").Replace(name)
}

func newRuntime(t *testing.T) *Runtime {
	t.Helper()
	r, err := New(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runToExit creates and starts a container running args with stdout and
// stderr captured, waits for it and deletes it. It returns the exit code and
// the output.
func runToExit(t *testing.T, r *Runtime, bundle string, s *specs.Spec) (int, string) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx := context.Background()
	id := "rt-" + sanitize(t.Name())
	c, err := r.Create(ctx, id, CreateOpts{Bundle: bundle, Spec: s, Stdout: out, Stderr: out})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	code, err := c.Wait()
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if err := c.Delete(ctx, false); err != nil {
		t.Fatalf("delete: %v", err)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, string(b)
}

func TestRunBasic(t *testing.T) {
	bundle, s := newBundle(t, "sh", "-c", `echo pid=$$; hostname; grep NSpid /proc/self/status; exit 3`)
	r := newRuntime(t)
	code, out := runToExit(t, r, bundle, s)
	fmt.Println(out)
	if code != 3 {
		t.Fatalf("exit code: got %d, want 3 (output %q)", code, out)
	}
	if !strings.Contains(out, "pid=1\n") {
		t.Fatalf("got %q, want pid=1", out)
	}
	if !strings.Contains(out, "cryo\n") {
		t.Fatalf("got %q, want hostname cryo", out)
	}
}
