package runtime

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
)

// TestExtraFiles passes a pipe the test holds as fd 3 of the container's
// process and of an exec'd process (runc's --preserve-fds): they write to
// fd 3 and the test reads it; no other runtime fd reaches them.
func TestExtraFiles(t *testing.T) {
	bundle, s := newBundle(t, "sh", "-c", "echo init-fd3 >&3; ls /proc/self/fd >&3; exec sleep 100")
	r := newRuntime(t)
	ctx := context.Background()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	c, err := r.Create(ctx, "xf", CreateOpts{Bundle: bundle, Spec: s, ExtraFiles: []*os.File{pw}})
	if err != nil {
		pw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, true) })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p := shProcess(s.Process, "echo exec-fd3 >&3")
	proc, err := c.Exec(ctx, ExecOpts{Process: p, ExtraFiles: []*os.File{pw}})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := proc.Wait(); err != nil || code != 0 {
		t.Fatalf("exec: %d %v", code, err)
	}
	pw.Close()
	// The init still holds fd 3 (sleep): kill it for EOF.
	if err := c.Delete(ctx, true); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	// The init and the exec'd process write concurrently: take the exec's
	// line out. ls of /proc/self/fd lists 0 1 2 3 and the fd of the
	// directory it reads.
	got := string(b)
	if strings.Count(got, "exec-fd3\n") != 1 {
		t.Fatalf("read from fd 3 %q, want one exec-fd3 line", got)
	}
	if rest, want := strings.Replace(got, "exec-fd3\n", "", 1), "init-fd3\n0\n1\n2\n3\n4\n"; rest != want {
		t.Fatalf("init wrote %q to fd 3, want %q", rest, want)
	}
}
