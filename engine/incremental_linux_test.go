package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/integration/testutil"
)

// incrStatus is the status line of testdata/incr.c.
type incrStatus struct {
	Seq, Round int64
	Sum        string
	Counter    int64
}

func readIncr(path string) (incrStatus, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return incrStatus{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) != 4 {
		return incrStatus{}, false
	}
	var s incrStatus
	var e1, e2, e3 error
	s.Seq, e1 = strconv.ParseInt(f[0], 10, 64)
	s.Round, e2 = strconv.ParseInt(f[1], 10, 64)
	s.Sum = f[2]
	s.Counter, e3 = strconv.ParseInt(f[3], 10, 64)
	return s, e1 == nil && e2 == nil && e3 == nil
}

func waitIncr(t testing.TB, path string, ok func(incrStatus) bool) incrStatus {
	t.Helper()
	var s incrStatus
	waitFor(t, "the incr workload's status", func() bool {
		var found bool
		s, found = readIncr(path)
		return found && ok(s)
	})
	return s
}

// nextRound makes the workload write 1% of its pages and waits for its new checksum.
func nextRound(t testing.TB, pid int, status string, prev incrStatus) incrStatus {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	return waitIncr(t, status, func(s incrStatus) bool { return s.Round == prev.Round+1 && s.Seq > prev.Seq })
}

// startIncr starts the incr workload touching mib MiB, in a PID namespace of
// its own under a freezer, and waits for its first status: it returns the
// test directory, the status file, the freezer, the command and that status.
func startIncr(t *testing.T, mib string) (string, string, *cgroupFreezer, *exec.Cmd, incrStatus) {
	t.Helper()
	bin := buildC(t, "incr")
	dir := t.TempDir()
	status := filepath.Join(dir, "status")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, mib, status)
	return dir, status, fz, cmd, waitIncr(t, status, func(s incrStatus) bool { return s.Seq >= 1 })
}

// linkParent lays the parent image out under dir/parent, as the packer does.
func linkParent(t testing.TB, dir, parent string) {
	t.Helper()
	if err := os.Symlink(parent, filepath.Join(dir, image.ParentDir)); err != nil {
		t.Fatal(err)
	}
}

// checkRestoredSum restores img into a stub, asks the restored workload for
// its checksum and compares it with want; the counter must go on. It
// returns the stub (the restored workload).
func checkRestoredSum(t *testing.T, img, status string, want incrStatus) *exec.Cmd {
	t.Helper()
	// No status left over from an earlier run of the workload (same file).
	if err := os.WriteFile(status, []byte("0 0 none 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore %s: %v", img, err)
	}
	if err := unix.Kill(stub.Process.Pid, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	got := waitIncr(t, status, func(s incrStatus) bool { return s.Seq == want.Seq+1 })
	if got.Sum != want.Sum || got.Round != want.Round {
		t.Fatalf("restored memory: round %d checksum %s, want round %d checksum %s (at the checkpoint)", got.Round, got.Sum, want.Round, want.Sum)
	}
	if got.Counter <= want.Counter || got.Counter > want.Counter+100000 {
		t.Fatalf("restored counter %d, want it to continue from %d", got.Counter, want.Counter)
	}
	return stub
}

// A chain of three: full, then two incremental dumps after 1% of 64 MiB
// changed each time; the last one restored gives the memory of its moment.
func TestIncrementalChain(t *testing.T) {
	testutil.RequiresRoot(t)
	dir, status, fz, cmd, s0 := startIncr(t, "64")
	pid := cmd.Process.Pid
	ctx := context.Background()

	c1 := filepath.Join(dir, "c1")
	r1, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c1, LeaveRunning: true})
	if err != nil {
		t.Fatalf("dump 1: %v", err)
	}
	tr, err := image.ReadTracking(c1)
	if err != nil || tr == nil || len(tr.Tasks) != 1 {
		t.Fatalf("dump 1 armed no tracker: %+v, %v", tr, err)
	}
	s1 := nextRound(t, pid, status, s0)

	c2 := filepath.Join(dir, "c2")
	r2, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c2, LeaveRunning: true, Parent: c1})
	if err != nil {
		t.Fatalf("dump 2: %v", err)
	}
	linkParent(t, c2, c1)
	s2 := nextRound(t, pid, status, s1)

	c3 := filepath.Join(dir, "c3")
	r3, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c3, Parent: c2})
	if err != nil {
		t.Fatalf("dump 3: %v", err)
	}
	_ = cmd.Wait()
	linkParent(t, c3, c2)

	for i, r := range []*DumpResult{r2, r3} {
		t.Logf("dump %d: %d bytes written, %d from the parent, %d compared (full dump: %d bytes)", i+2, r.PageBytes, r.ParentBytes, r.ComparedBytes, r1.PageBytes)
		if r.PageBytes*10 > r1.PageBytes {
			t.Errorf("incremental dump %d wrote %d bytes of pages, more than 10%% of the full dump's %d", i+2, r.PageBytes, r1.PageBytes)
		}
		if r.PageBytes < 64<<20/100 {
			t.Errorf("incremental dump %d wrote %d bytes, less than the 1%% of 64 MiB that changed", i+2, r.PageBytes)
		}
		if r.ComparedBytes > 1<<20 {
			t.Errorf("incremental dump %d compared %d bytes: the tracker was not used", i+2, r.ComparedBytes)
		}
	}
	rec, err := image.ReadTask(c3, 1)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range rec.Mm.ParentPages {
		names[p.Name] = true
	}
	if !names["parent/pages-1.img"] || !names["parent/parent/pages-1.img"] {
		t.Errorf("dump 3 refers to %v, want pages of both earlier generations", rec.Mm.ParentPages)
	}
	checkRestoredSum(t, c3, status, s2)
}

// A chain of three whose page data is split into parts (a part size of
// 64 KiB here, 64 MiB in production): runs of the later generations refer
// to offsets in the concatenation of an earlier generation's parts, through
// the tracker (dump 2) and through comparison with split parents (dump 3,
// the tracker re-armed by another dump); both restores map every
// generation's parts and give back the memory of their moment.
func TestIncrementalSplitPages(t *testing.T) {
	testutil.RequiresRoot(t)
	defer func(old uint64) { pagesPartSize = old }(pagesPartSize)
	pagesPartSize = 64 << 10
	dir, status, fz, cmd, s0 := startIncr(t, "16")
	pid := cmd.Process.Pid
	ctx := context.Background()

	c1 := filepath.Join(dir, "c1")
	r1, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c1, LeaveRunning: true, HashPages: true})
	if err != nil {
		t.Fatalf("dump 1: %v", err)
	}
	s1 := nextRound(t, pid, status, s0)
	c2 := filepath.Join(dir, "c2")
	r2, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c2, LeaveRunning: true, Parent: c1, HashPages: true})
	if err != nil {
		t.Fatalf("dump 2: %v", err)
	}
	linkParent(t, c2, c1)
	// Another dump re-arms the tracker: dump 3 must compare.
	if _, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: filepath.Join(dir, "other"), LeaveRunning: true}); err != nil {
		t.Fatalf("dump 2b: %v", err)
	}
	s2 := nextRound(t, pid, status, s1)
	c3 := filepath.Join(dir, "c3")
	r3, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c3, Parent: c2, HashPages: true})
	if err != nil {
		t.Fatalf("dump 3: %v", err)
	}
	_ = cmd.Wait()
	linkParent(t, c3, c2)

	for i, r := range []*DumpResult{r1, r2, r3} {
		t.Logf("dump %d: %d bytes in %d files, %d from the parent, %d compared", i+1, r.PageBytes, len(r.PageFiles), r.ParentBytes, r.ComparedBytes)
		if want := int((r.PageBytes + pagesPartSize - 1) / pagesPartSize); len(r.PageFiles) != want || want < 2 {
			t.Errorf("dump %d: %d pages files for %d bytes, want %d (>= 2)", i+1, len(r.PageFiles), r.PageBytes, want)
		}
		checkDigests(t, filepath.Join(dir, "c"+strconv.Itoa(i+1)), r)
	}
	if r2.ComparedBytes > 1<<20 || r2.PageBytes*10 > r1.PageBytes {
		t.Errorf("dump 2 compared %d and wrote %d bytes: the tracker was not used", r2.ComparedBytes, r2.PageBytes)
	}
	if r3.ComparedBytes < 16<<20 || r3.PageBytes*10 > r1.PageBytes {
		t.Errorf("dump 3 compared %d and wrote %d bytes, want the whole area compared and only the changes written", r3.ComparedBytes, r3.PageBytes)
	}
	rec, err := image.ReadTask(c3, 1)
	if err != nil {
		t.Fatal(err)
	}
	gens := map[string]image.ParentPages{}
	for _, p := range rec.Mm.ParentPages {
		gens[p.Name] = p
	}
	for name, want := range map[string]*DumpResult{"parent/pages-1.img": r2, "parent/parent/pages-1.img": r1} {
		p, ok := gens[name]
		if !ok {
			t.Fatalf("dump 3 refers to %+v, want pages of both earlier generations", rec.Mm.ParentPages)
		}
		dirName, _ := filepath.Split(name)
		if p.Size != want.PageBytes || len(p.Parts) != len(want.PageFiles)-1 || p.PartSize != pagesPartSize {
			t.Errorf("%s: %d bytes in %d parts of %d, want %d bytes in the files %v", name, p.Size, len(p.Parts)+1, p.PartSize, want.PageBytes, want.PageFiles)
		}
		for k, part := range p.Parts {
			if part != dirName+want.PageFiles[k+1] {
				t.Errorf("%s: part %d is %s, want %s", name, k+1, part, dirName+want.PageFiles[k+1])
			}
		}
	}
	// Runs into the grandparent beyond its first part: the offsets are in
	// the concatenation.
	var far bool
	for _, v := range rec.Mm.Vmas {
		for _, r := range v.Pages {
			far = far || r.File > 0 && r.Off >= pagesPartSize
		}
	}
	if !far {
		t.Error("dump 3 has no run beyond the first part of a parent's page data")
	}
	restored := checkRestoredSum(t, c2, status, s1)
	_ = restored.Process.Kill()
	_ = restored.Wait()
	checkRestoredSum(t, c3, status, s2)
}

// checkDigests compares the digests a dump computed with its files'.
func checkDigests(t *testing.T, img string, r *DumpResult) {
	t.Helper()
	for _, name := range r.PageFiles {
		data, err := os.ReadFile(filepath.Join(img, name))
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(data)) > pagesPartSize {
			t.Errorf("%s: %d bytes, more than a part", name, len(data))
		}
		if got, want := r.PageDigests[name], digestOf(data); got != want {
			t.Errorf("%s/%s: digest %s from the dump, %s from the file", img, name, got, want)
		}
	}
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Without a valid tracker (here: re-armed by a later dump) an incremental
// dump compares the pages with the parent's and still writes only the changes.
func TestIncrementalCompare(t *testing.T) {
	testutil.RequiresRoot(t)
	dir, status, fz, cmd, s0 := startIncr(t, "16")
	pid := cmd.Process.Pid
	ctx := context.Background()
	c1 := filepath.Join(dir, "c1")
	r1, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c1, LeaveRunning: true})
	if err != nil {
		t.Fatalf("dump 1: %v", err)
	}
	// A second full dump re-arms the tracker: c1's is gone.
	if _, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: filepath.Join(dir, "other"), LeaveRunning: true}); err != nil {
		t.Fatalf("dump 1b: %v", err)
	}
	s1 := nextRound(t, pid, status, s0)
	c2 := filepath.Join(dir, "c2")
	r2, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c2, Parent: c1})
	if err != nil {
		t.Fatalf("dump 2: %v", err)
	}
	_ = cmd.Wait()
	linkParent(t, c2, c1)
	t.Logf("dump 2: %d bytes written, %d from the parent, %d compared (full dump: %d bytes)", r2.PageBytes, r2.ParentBytes, r2.ComparedBytes, r1.PageBytes)
	if r2.ComparedBytes < 16<<20 {
		t.Errorf("dump 2 compared %d bytes, want the whole area (the tracker is not the parent's)", r2.ComparedBytes)
	}
	if r2.PageBytes*10 > r1.PageBytes {
		t.Errorf("dump 2 wrote %d bytes of pages, more than 10%% of the full dump's %d", r2.PageBytes, r1.PageBytes)
	}
	checkRestoredSum(t, c2, status, s1)
}

// A parent that is missing or whose files do not match its records fails
// the dump, and the tree keeps running untraced.
func TestIncrementalBadParent(t *testing.T) {
	testutil.RequiresRoot(t)
	dir, status, fz, cmd, s0 := startIncr(t, "4")
	pid := cmd.Process.Pid
	ctx := context.Background()
	c1 := filepath.Join(dir, "c1")
	if _, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c1, LeaveRunning: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: filepath.Join(dir, "x"), Parent: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("dump with a missing parent succeeded")
	} else {
		t.Logf("missing parent: %v", err)
	}
	if err := os.Truncate(filepath.Join(c1, image.PagesFile(1)), 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: filepath.Join(dir, "y"), Parent: c1}); err == nil || !strings.Contains(err.Error(), "parent image") {
		t.Fatalf("dump with a truncated parent: %v, want a parent image error", err)
	} else {
		t.Logf("truncated parent: %v", err)
	}
	if tracerPid(t, pid) != 0 {
		t.Fatal("the tree is still traced after a failed dump")
	}
	nextRound(t, pid, status, s0)
}

// BenchmarkIncremental1Percent times an incremental dump (parent: the
// previous dump, tracker armed by it) after 1% of 512 MiB of touched memory
// changed, and reports its size next to a full dump's time and size.
func BenchmarkIncremental1Percent(b *testing.B) {
	testutil.RequiresRoot(b)
	const mib = 512
	bin := buildC(b, "incr")
	dir := b.TempDir()
	status := filepath.Join(dir, "status")
	fz := newCgroupFreezer(b)
	cmd := startInNewPidns(b, fz, bin, strconv.Itoa(mib), status)
	pid := cmd.Process.Pid
	s := waitIncr(b, status, func(s incrStatus) bool { return s.Seq >= 1 })
	ctx := context.Background()
	prev := filepath.Join(dir, "full")
	start := time.Now()
	full, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: prev, LeaveRunning: true})
	if err != nil {
		b.Fatal(err)
	}
	fullTime := time.Since(start)
	var written uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s = nextRound(b, pid, status, s)
		img := filepath.Join(dir, "incr"+strconv.Itoa(i))
		b.StartTimer()
		res, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: img, LeaveRunning: true, Parent: prev})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		linkParent(b, img, prev)
		written += res.PageBytes
		prev = img
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(full.PageBytes)/(1<<20), "full-MiB")
	b.ReportMetric(float64(fullTime.Milliseconds()), "full-ms")
	b.ReportMetric(float64(written)/float64(b.N)/(1<<20), "incr-MiB")
	b.ReportMetric(100*float64(written)/float64(b.N)/float64(full.PageBytes), "incr-%")
}

// A pre-copy dump: 1% of the pages change after the trackers are armed and
// before the copy reads them, 1% more after the copy: the dump that stops
// the tree copies those (and little else), refers to the pre-copied file for
// the rest, and the restore gives back the memory of the final moment.
func TestPreCopy(t *testing.T) {
	testutil.RequiresRoot(t)
	dir, status, fz, cmd, s := startIncr(t, "64")
	pid := cmd.Process.Pid
	var stages []string
	preCopyHook = func(stage string) {
		stages = append(stages, stage)
		s = nextRound(t, pid, status, s)
	}
	defer func() { preCopyHook = nil }()
	img := filepath.Join(dir, "img")
	r, err := Dump(context.Background(), DumpOptions{Pid: pid, Freezer: fz, ImageDir: img, PreCopy: true, HashPages: true})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	if strings.Join(stages, ",") != "copy,copied" {
		t.Fatalf("pre-copy stages %v", stages)
	}
	own := r.PageBytes - r.PreCopiedBytes
	t.Logf("pre-copied %d bytes, %d written while stopped", r.PreCopiedBytes, own)
	if r.PreCopiedBytes < 60<<20 {
		t.Errorf("pre-copied %d bytes of the 64 MiB workload", r.PreCopiedBytes)
	}
	if own < 64<<20/100 || own > 64<<20/10 {
		t.Errorf("the stopped dump wrote %d bytes, want about the 1%% of 64 MiB changed after the copy", own)
	}
	rec, err := image.ReadTask(img, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Mm.ParentPages) != 1 || rec.Mm.ParentPages[0].Name != image.PreCopyPagesFile(1) {
		t.Fatalf("the dump refers to %+v, want the pre-copied pages", rec.Mm.ParentPages)
	}
	for _, f := range rec.Mm.ParentPages[0].Parts {
		if r.PageDigests[f] == "" {
			t.Errorf("no digest for pre-copied part %s", f)
		}
	}
	if r.PageDigests[image.PreCopyPagesFile(1)] == "" {
		t.Errorf("no digest for the pre-copied pages: %v", r.PageDigests)
	}
	checkRestoredSum(t, img, status, s)
}

// Signals that arrive while a pre-copy dump seizes the tree (twice) are
// delivered all the same: every queued real-time signal sent during five
// dumps is counted by the workload, which runs on.
func TestPreCopySignals(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildC(t, "sigcount")
	dir := t.TempDir()
	status := filepath.Join(dir, "status")
	fz := newCgroupFreezer(t)
	cmd := startInNewPidns(t, fz, bin, status)
	pid := cmd.Process.Pid
	count := func() int {
		b, err := os.ReadFile(status)
		if err != nil {
			return -1
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return -1
		}
		return n
	}
	waitFor(t, "the workload's status", func() bool { return count() == 0 })
	// Signals sent all along the dumps, paced so that the workload (and
	// its pending queue, RLIMIT_SIGPENDING) keeps up.
	stop := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		sent := 0
		for {
			select {
			case <-stop:
				done <- sent
				return
			default:
			}
			if err := unix.Kill(pid, sigRTMin); err != nil {
				t.Error(err)
				done <- sent
				return
			}
			sent++
			time.Sleep(20 * time.Microsecond)
		}
	}()
	for i := 0; i < 5; i++ {
		if _, err := Dump(context.Background(), DumpOptions{Pid: pid, Freezer: fz, ImageDir: filepath.Join(dir, "img"+strconv.Itoa(i)), LeaveRunning: true, PreCopy: true}); err != nil {
			close(stop)
			t.Fatalf("dump %d: %v", i, err)
		}
	}
	close(stop)
	sent := <-done
	waitFor(t, "every signal counted", func() bool { return count() == sent })
}

// sigRTMin is glibc's SIGRTMIN (the kernel's 32 and 33 are taken by NPTL).
const sigRTMin = unix.Signal(34)

// A pre-copied image as the parent of an incremental dump (runc's pre-dump
// then checkpoint --parent-path): the child refers to the parent's
// pre-copied file under parent/, writes only what changed, and restores the
// memory of its own moment.
func TestPreCopyParent(t *testing.T) {
	testutil.RequiresRoot(t)
	dir, status, fz, cmd, s0 := startIncr(t, "64")
	pid := cmd.Process.Pid
	ctx := context.Background()
	c1 := filepath.Join(dir, "c1")
	r1, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c1, LeaveRunning: true, PreCopy: true})
	if err != nil {
		t.Fatalf("dump 1: %v", err)
	}
	if r1.PreCopiedBytes == 0 {
		t.Fatal("dump 1 pre-copied nothing")
	}
	s1 := nextRound(t, pid, status, s0)
	c2 := filepath.Join(dir, "c2")
	r2, err := Dump(ctx, DumpOptions{Pid: pid, Freezer: fz, ImageDir: c2, Parent: c1})
	if err != nil {
		t.Fatalf("dump 2: %v", err)
	}
	_ = cmd.Wait()
	linkParent(t, c2, c1)
	t.Logf("dump 2: %d bytes written, %d from the parent, %d compared", r2.PageBytes, r2.ParentBytes, r2.ComparedBytes)
	if r2.PageBytes > 64<<20/10 || r2.ComparedBytes > 1<<20 {
		t.Errorf("dump 2 wrote %d and compared %d bytes: the pre-copy's tracker was not used", r2.PageBytes, r2.ComparedBytes)
	}
	rec, err := image.ReadTask(c2, 1)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range rec.Mm.ParentPages {
		names[p.Name] = true
	}
	if !names["parent/"+image.PreCopyPagesFile(1)] {
		t.Errorf("dump 2 refers to %v, want the parent's pre-copied pages", rec.Mm.ParentPages)
	}
	checkRestoredSum(t, c2, status, s1)
}
