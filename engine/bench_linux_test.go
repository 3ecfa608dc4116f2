package engine

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cryo-run/cryo/integration/testutil"
)

const benchMiB = 64

func startMemhog(b *testing.B, mib int) (pid int, dir string) {
	b.Helper()
	bin := buildC(b, "memhog")
	dir = b.TempDir()
	ready := filepath.Join(dir, "ready")
	cmd := startInNewPidns(b, nil, bin, strconv.Itoa(mib), ready)
	waitFor(b, "memhog to touch its memory", func() bool {
		data, err := os.ReadFile(ready)
		return err == nil && string(data) == "ready"
	})
	return cmd.Process.Pid, dir
}

// BenchmarkDump64MiB dumps a process holding 64 MiB of touched anonymous
// memory (left running, so every iteration dumps the same process).
func BenchmarkDump64MiB(b *testing.B) {
	testutil.RequiresRoot(b)
	pid, dir := startMemhog(b, benchMiB)
	b.SetBytes(benchMiB << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		img := filepath.Join(dir, "img"+strconv.Itoa(i))
		if _, err := Dump(context.Background(), DumpOptions{Pid: pid, ImageDir: img, LeaveRunning: true}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(img)
		b.StartTimer()
	}
}

// BenchmarkRestore64MiB restores a 64 MiB process into a fresh stub.
func BenchmarkRestore64MiB(b *testing.B) {
	testutil.RequiresRoot(b)
	pid, dir := startMemhog(b, benchMiB)
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: pid, ImageDir: img}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchMiB << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		stub := startStub(b)
		b.StartTimer()
		if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = stub.Process.Kill()
		_ = stub.Wait()
		b.StartTimer()
	}
}
