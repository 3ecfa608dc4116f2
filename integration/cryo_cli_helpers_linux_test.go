package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/integration/testutil"
)

// cryoCLI runs bin/cryo directly (no containerd) with a private state root.
type cryoCLI struct {
	t    *testing.T
	root string // --root
	bin  string
}

func newCryoCLI(t *testing.T) *cryoCLI {
	t.Helper()
	testutil.RequiresRoot(t)
	return &cryoCLI{t: t, root: filepath.Join(t.TempDir(), "state"), bin: env.bins.Cryo}
}

// cmd returns `cryo --root ROOT args...` with /dev/null as stdio (a detached container must
// not hold the test's pipes).
func (c *cryoCLI) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, append([]string{"--root", c.root}, args...)...)
	return cmd
}

// run runs cryo and returns its stdout, stderr and error.
func (c *cryoCLI) run(args ...string) (string, string, error) {
	return runCapture(c.cmd(args...))
}

// detached runs a cryo command that leaves a container running (run or restore --detach):
// the container inherits cryo's stdio, so that is /dev/null and a file, never a pipe the
// test would wait on.
func (c *cryoCLI) detached(args ...string) {
	c.t.Helper()
	_, stderr, err := runDetachedCmd(c.t, c.cmd(args...))
	if err != nil {
		c.t.Fatalf("cryo %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
}

// runDetachedCmd runs cmd with /dev/null as stdin and stdout and a pipe as stderr (a regular
// file would be an open file of the container's, which a checkpoint must then reopen), and
// returns what cryo wrote to stderr before it exited. The container keeps the pipe's write end,
// so the pipe is read without waiting for its end.
func runDetachedCmd(t *testing.T, cmd *exec.Cmd) (string, string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		return "", "", err
	}
	var stderr bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			stderr.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	err = cmd.Wait()
	// cryo has exited: what it wrote is in the pipe; the container may hold it open forever
	r.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	<-done
	return "", stderr.String(), err
}

// must runs cryo and fails the test on error.
func (c *cryoCLI) must(args ...string) string {
	c.t.Helper()
	out, stderr, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("cryo %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func runCapture(cmd *exec.Cmd) (string, string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cmd.Stdin == nil {
		cmd.Stdin = bytes.NewReader(nil)
	}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// state is what `cryo state` prints that the tests use.
type cryoState struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

func (c *cryoCLI) state(id string) cryoState {
	c.t.Helper()
	var st cryoState
	if err := json.Unmarshal([]byte(c.must("state", id)), &st); err != nil {
		c.t.Fatalf("cryo state %s: %v", id, err)
	}
	return st
}

// ids lists the containers cryo knows (cryo list -q).
func (c *cryoCLI) ids() []string {
	c.t.Helper()
	return strings.Fields(c.must("list", "-q"))
}

// cleanup removes container id (forcefully) at the end of the test if it still exists.
func (c *cryoCLI) cleanup(id string) {
	c.t.Cleanup(func() {
		if _, _, err := c.run("state", id); err == nil {
			if _, stderr, err := c.run("delete", "--force", id); err != nil {
				c.t.Errorf("cleanup: cryo delete --force %s: %v: %s", id, err, stderr)
			}
		}
	})
}

// bundle is an OCI bundle of busybox for the standalone tests.
type cliBundle struct {
	dir  string
	spec *specs.Spec
}

// cgroupName returns the cgroup path tests give their containers: unique per test and branch.
func cgroupName(t *testing.T, suffix string) string {
	name := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
	return "/cryo-it-images-" + strings.ToLower(name) + "-" + suffix
}

// newCLIBundle makes a bundle whose rootfs holds busybox and whose config is `cryo spec`'s,
// writable, without a terminal, running args in cgroup cgroupName(t, suffix).
func newCLIBundle(t *testing.T, c *cryoCLI, suffix string, args ...string) *cliBundle {
	t.Helper()
	return newCLIBundleIn(t, c, t.TempDir(), suffix, args...)
}

// newCLIBundleIn is newCLIBundle with the bundle made under parent.
func newCLIBundleIn(t *testing.T, c *cryoCLI, parent, suffix string, args ...string) *cliBundle {
	t.Helper()
	dir := filepath.Join(parent, "bundle-"+suffix)
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "etc", "tmp", "root", "state"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "sleep", "mv", "cat", "echo"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.must("spec", "--bundle", dir)
	b := &cliBundle{dir: dir}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &b.spec); err != nil {
		t.Fatal(err)
	}
	b.spec.Root.Readonly = false
	b.spec.Process.Terminal = false
	b.spec.Process.Args = args
	b.spec.Linux.CgroupsPath = cgroupName(t, suffix)
	b.write(t)
	return b
}

func (b *cliBundle) write(t *testing.T) {
	t.Helper()
	data, err := json.MarshalIndent(b.spec, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// runCounter starts the counter workload detached as container id from a new bundle and
// returns the bundle, the init's host PID and a first reading of at least 3.
func runTokenLoop(t *testing.T, c *cryoCLI, id string, script string) (*cliBundle, int, reading) {
	t.Helper()
	b := newCLIBundle(t, c, id, "sh", "-c", script)
	c.cleanup(id)
	c.detached("run", "--detach", "--bundle", b.dir, id)
	st := c.state(id)
	if st.Status != "running" || st.Pid <= 0 {
		t.Fatalf("cryo state %s: %+v", id, st)
	}
	return b, st.Pid, waitToken(t, st.Pid, 3)
}

// cgroupLeft returns the cgroup directories named path in any hierarchy (v1 controllers and
// the unified one): what a failed restore must not leave behind.
func cgroupLeft(path string) []string {
	var left []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, r := range roots {
		p := filepath.Join(r, path)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			left = append(left, p)
		}
	}
	return left
}

// asUser returns cmd set to run with uid and gid (and no supplementary groups).
func asUser(cmd *exec.Cmd, uid, gid uint32) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	return cmd
}

// publicDir makes a directory under /tmp that every user may enter (0755, or mode), removed at
// the end of the test; t.TempDir is private to root.
func publicDir(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cryo-it-images-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// publicCryo copies bin/cryo into a directory every user can reach and returns its path.
func publicCryo(t *testing.T) string {
	t.Helper()
	dir := publicDir(t, 0o755)
	dst := filepath.Join(dir, "cryo")
	in, err := os.Open(env.bins.Cryo)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// chownTree gives every file under root to uid:gid and makes it readable and writable by all
// (the owner check of cryo, not the file modes, is what the tests then exercise).
func chownTree(t *testing.T, root string, uid, gid int) {
	t.Helper()
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return err
		}
		mode := os.FileMode(0o666)
		if fi.IsDir() {
			mode = 0o777
		}
		return os.Chmod(p, mode)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// copyTree copies a layout directory (regular files and directories).
func copyLayout(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// isExit reports whether err is a non-zero exit of the command (not a failure to run it).
func isExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}
