// Package integration holds cryo's black-box tests: real binaries (containerd, ctr, nerdctl and
// the runc shim at the versions our go.mod pins, our cryo binaries from the working tree) and a
// real, private containerd. The same scenarios run against the runc shim (the baseline) and
// against containerd-shim-cryo-v2.
package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/internal/harness"
	"github.com/cryo-run/cryo/integration/testutil"
)

var keepLogs = flag.Bool("keep-logs", false, "keep containerd's log even when every test passes")

// env is what TestMain prepared: the binaries, one shared daemon with the busybox image.
var env struct {
	bins   *harness.Binaries
	daemon *harness.Daemon
	// busyboxTar is the image archive, for tests that start daemons of their own.
	busyboxTar string
}

// busybox is the image name every test runs.
const busybox = "localhost/cryo-it/busybox:latest"

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration: skipped under -short (needs root, builds containerd)")
		return
	}
	if os.Geteuid() != 0 {
		if testutil.InCI() {
			fmt.Fprintln(os.Stderr, "integration: under CI=true these tests must run as root")
			os.Exit(1)
		}
		fmt.Println("integration: skipped, requires root")
		return
	}
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "integration: "+format+"\n", args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	binDir, err := os.MkdirTemp("", "cryo-it-bin-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	start := time.Now()
	env.bins, err = harness.Build(ctx, binDir, logf)
	if err != nil {
		logf("build: %v", err)
		return 1
	}
	logf("binaries ready in %s", time.Since(start).Round(time.Millisecond))

	env.daemon, err = harness.NewDaemon(env.bins, "main")
	if err != nil {
		logf("daemon: %v", err)
		return 1
	}
	code = 1
	defer func() {
		kept, err := env.daemon.Close(code != 0 || *keepLogs)
		if err != nil {
			logf("cleanup: %v", err)
			if code == 0 {
				code = 1
			}
		}
		if kept != "" {
			logf("containerd log kept at %s", kept)
		}
	}()
	if err := env.daemon.Start(ctx); err != nil {
		logf("start containerd: %v", err)
		return 1
	}
	img, err := harness.BusyboxImage(ctx, busybox)
	if err != nil {
		logf("%v", err)
		return 1
	}
	env.busyboxTar = filepath.Join(binDir, "busybox.tar")
	if err := img.WriteArchiveFile(env.busyboxTar); err != nil {
		logf("write image: %v", err)
		return 1
	}
	if err := env.daemon.Import(ctx, env.busyboxTar); err != nil {
		logf("import: %v", err)
		return 1
	}
	return m.Run()
}

// sharedDaemon returns the package's daemon and, when the test fails, logs the tail of
// containerd's log (shim logs included).
func sharedDaemon(t *testing.T) *harness.Daemon {
	t.Helper()
	testutil.RequiresRoot(t)
	d := env.daemon
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log (tail):\n%s", d.LogTail(80))
		}
	})
	return d
}

// newDaemon starts a daemon of the test's own (for restarts and migrations), with the busybox
// image imported, and closes it at the end of the test.
func newDaemon(t *testing.T, name string) *harness.Daemon {
	t.Helper()
	testutil.RequiresRoot(t)
	d, err := harness.NewDaemon(env.bins, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log of %s (tail):\n%s", d.Namespace, d.LogTail(80))
		}
		kept, err := d.Close(t.Failed())
		if err != nil {
			t.Errorf("close daemon %s: %v", d.Namespace, err)
		}
		if kept != "" {
			t.Logf("containerd log kept at %s", kept)
		}
	})
	ctx := context.Background()
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Import(ctx, env.busyboxTar); err != nil {
		t.Fatal(err)
	}
	return d
}
