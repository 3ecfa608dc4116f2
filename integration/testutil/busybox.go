package testutil

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BusyboxApplets are the applets linked into a BusyboxRootfs.
var BusyboxApplets = []string{"sh", "cat", "echo", "ls", "sleep", "id", "hostname", "true", "false",
	"mount", "grep", "touch", "readlink", "stat", "ps", "test", "kill", "wc", "head", "env", "pwd",
	"umask", "dd", "mkdir", "rm", "uname", "nproc", "tty", "stty", "seq", "yes", "tail"}

// BusyboxRootfs builds a minimal root file system in dir from Debian's static
// busybox (/bin/busybox, package busybox-static): bin/ with the applets,
// proc, sys, dev, tmp, root and an /etc/passwd with root and nobody.
func BusyboxRootfs(t testing.TB, dir string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		SkipOrFail(t, "busybox not installed (apt-get install busybox-static)")
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "etc", "tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	in, err := os.Open(bb)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(dir, "bin/busybox"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range BusyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	if err := os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
}
