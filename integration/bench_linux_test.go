package integration

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/internal/harness"
)

// BenchmarkCtrRunRm times `ctr run --rm` of /bin/true (create, start, exit, delete, shim start
// and stop) with each shim in the same run, and reports the median of at least 20 runs, plus
// the resident memory of the shim serving one running container.
func BenchmarkCtrRunRm(b *testing.B) {
	d := env.daemon
	if d == nil {
		b.Skip("no daemon (-short or not root)")
	}
	for _, r := range runtimes {
		b.Run(r.name, func(b *testing.B) {
			n := max(b.N, 20)
			samples := make([]time.Duration, 0, n)
			b.ResetTimer()
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("bench-%s-%d", r.name, i)
				args := append([]string{"run", "--rm"}, r.runFlags(d)...)
				args = append(args, busybox, id, "/bin/true")
				start := time.Now()
				if _, err := d.Ctr(b.Context(), args...); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(samples)
			median := samples[len(samples)/2]
			b.ReportMetric(float64(median.Microseconds())/1000, "ms-median/run")
			rss := shimRSS(b, r)
			b.ReportMetric(float64(rss["VmRSS"]), "KiB-shim-rss")
			// Where it is: private memory, and pages of the shim binary (shared by every shim
			// process that runs the same binary).
			b.ReportMetric(float64(rss["RssAnon"]), "KiB-shim-rss-anon")
			b.ReportMetric(float64(rss["RssFile"]), "KiB-shim-rss-file")
		})
	}
}

// shimRSS starts a container that sleeps and returns VmRSS, RssAnon and RssFile of its shim
// in KiB, from one read of /proc/PID/status.
func shimRSS(b *testing.B, r rt) map[string]int {
	d := env.daemon
	id := "bench-rss-" + r.name
	args := append([]string{"run", "-d"}, r.runFlags(d)...)
	if _, err := d.Ctr(b.Context(), append(args, busybox, id, "sleep", "60")...); err != nil {
		b.Fatal(err)
	}
	defer func() {
		d.Ctr(b.Context(), "tasks", "rm", "-f", id)
		d.Ctr(b.Context(), "containers", "rm", id)
	}()
	var pid int
	for _, p := range d.ShimPids() {
		if slices.Contains(harness.Cmdline(p), id) {
			pid = p
		}
	}
	if pid == 0 {
		b.Fatalf("no shim for %s", id)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	rss := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "RssAnon" && k != "RssFile") {
			continue
		}
		kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		if err != nil {
			b.Fatalf("%s %q", k, v)
		}
		rss[k] = kb
	}
	for _, k := range []string{"VmRSS", "RssAnon", "RssFile"} {
		if _, ok := rss[k]; !ok {
			b.Fatalf("no %s for shim %d", k, pid)
		}
	}
	return rss
}
