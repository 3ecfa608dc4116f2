package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cryo-run/cryo/integration/testutil"
)

// BenchmarkCreateStartDelete runs a /bin/true container in the foreground
// (create, start, wait, delete) with cryo and, when installed, Debian's runc
// on the same bundle. peak-rss-KiB is the largest resident set of the runtime
// process (and the init it reaps) over the iterations.
func BenchmarkCreateStartDelete(b *testing.B) {
	testutil.RequiresRoot(b)
	dir, _ := bundle(b, "true")
	runtimes := []struct{ name, bin string }{{"cryo", cryoBin}}
	if runc, err := exec.LookPath("runc"); err == nil {
		runtimes = append(runtimes, struct{ name, bin string }{"runc", runc})
	} else {
		b.Logf("runc not installed (apt-get install -y runc): benchmarking cryo only")
	}
	for _, rt := range runtimes {
		b.Run(rt.name, func(b *testing.B) {
			root := filepath.Join(b.TempDir(), "root")
			var peak int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cmd := exec.Command(rt.bin, "--root", root, "run", "--bundle", dir, fmt.Sprintf("bench-%s-%d", rt.name, i))
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%s run: %v\n%s", rt.name, err, out)
				}
				if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > peak {
					peak = ru.Maxrss
				}
			}
			b.ReportMetric(float64(peak), "peak-rss-KiB")
		})
	}
}
