package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/testutil"
)

func TestInspect(t *testing.T) {
	dir := goodLayout(t)
	s, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Verified {
		t.Error("Inspect claims every blob was hashed")
	}
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	full := c.Summary()
	if !full.Verified {
		t.Error("summary of an opened checkpoint not marked verified")
	}
	s.Verified = true
	if !reflect.DeepEqual(s, full) {
		t.Errorf("Inspect and Summary differ:\n%+v\n%+v", s, full)
	}
	if s.FormatRevision != FormatRevision || s.ContainerID != "victim" || s.Host.Kernel != "6.18.0-test" || len(s.Processes) != 2 {
		t.Errorf("summary: %+v", s)
	}
	var total int64
	for _, l := range s.Layers {
		total += l.Size
	}
	if total+c.ManifestDescriptor.Size+c.Manifest.Config.Size != s.TotalSize || len(s.Layers) != 4 {
		t.Errorf("sizes: %d layers, total %d", len(s.Layers), s.TotalSize)
	}
	var files []string
	for _, f := range s.Files {
		files = append(files, f.Path)
	}
	if want := []string{"core-1.img", "inventory.img", "pages-1.img", "pages-2.img"}; !slices.Equal(files, want) {
		t.Errorf("files %v, want %v", files, want)
	}

	var text bytes.Buffer
	if err := s.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, want := range []string{
		"revision:", "1 (engine test-1)", "container:", "victim", "created:", "2025-03-04T05:06:07.00000089Z",
		"kernel 6.18.0-test, amd64, 3 CPU features", "PROCESSES (2)", "counter", "/bin/counter -n", "1000",
		"/work", "pid 1 open files:", "3 /work/log (offset 42)", "socket 4 unix stream /run/s.sock",
		"LAYERS (4)", MediaTypeState, MediaTypePages, MediaTypeRootfsDiff, "64.0 KiB", "pages-1.img",
		"FILES (4)", "inventory.img", "ENGINE", "pageBytes:", "CPU FEATURES", "avx2",
		"monotonic 12.345678901s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	var js bytes.Buffer
	if err := s.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, s) {
		t.Errorf("JSON round trip differs:\n%+v\n%+v", back, *s)
	}
	// Inspect still refuses a damaged state layer and wrong sizes.
	bad := copyTree(t, dir)
	flipByte(t, blobPath(bad, layerOf(t, c.Manifest, MediaTypeState).Digest), 100)
	if _, err := Inspect(bad); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("inspect of a damaged state layer: got %v", err)
	}
}

func TestListAndRemove(t *testing.T) {
	root := t.TempDir()
	engine := makeEngineDir(t, engineFiles{"r.img": []byte("r"), "pages-1.img": []byte("p")})
	var paths []string
	for i, name := range []string{"b", "a"} {
		cfg := testConfig("ctr-" + name)
		cfg.Created = cfg.Created.Add(time.Duration(i) * time.Hour)
		p := filepath.Join(root, name)
		if _, err := WriteCheckpoint(p, engine, cfg, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	if err := WriteArchive(paths[1], filepath.Join(root, "a.tar")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(root, "junk"), 0o700)
	os.WriteFile(filepath.Join(root, "junk.tar"), []byte("not a tar"), 0o600)
	os.WriteFile(filepath.Join(root, "notes"), []byte("x"), 0o600)
	l, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range l {
		got = append(got, filepath.Base(e.Path)+" "+e.ContainerID)
		if e.Owner != os.Getuid() {
			t.Errorf("%s: owner %d", e.Path, e.Owner)
		}
	}
	if want := []string{"b ctr-b", "a ctr-a", "a.tar ctr-a"}; !slices.Equal(got, want) {
		t.Errorf("List: %v, want %v", got, want)
	}
	if !l[2].Archive || l[0].Archive {
		t.Error("archive flag wrong")
	}
	// Remove never deletes what is not a checkpoint.
	for _, p := range []string{filepath.Join(root, "junk"), filepath.Join(root, "notes"), filepath.Join(root, "junk.tar")} {
		if err := Remove(p, 0); !errors.Is(err, ErrNotCheckpoint) {
			t.Errorf("Remove(%s): got %v, want ErrNotCheckpoint", p, err)
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed", p)
		}
	}
	if err := Remove(filepath.Join(root, "a.tar"), 0); err != nil {
		t.Fatal(err)
	}
	if err := Remove(paths[0], os.Getuid()); err != nil {
		t.Fatal(err)
	}
	if l, _ := List(root); len(l) != 1 || l[0].Path != paths[1] {
		t.Errorf("after removals: %v", l)
	}
	if err := Remove(paths[0], 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove of a removed image: %v", err)
	}
}

func TestRemoveOnlyForOwnerOrRoot(t *testing.T) {
	testutil.RequiresRoot(t) // chown to another user
	engine := makeEngineDir(t, engineFiles{"r.img": []byte("r"), "pages-1.img": []byte("p")})
	dir := filepath.Join(t.TempDir(), "ckpt")
	owner := &Owner{UID: 4242, GID: 4343}
	if _, err := WriteCheckpoint(dir, engine, testConfig("c"), WriteOptions{Owner: owner}); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		if uid, _ := fileOwner(fi); uid != owner.UID {
			t.Errorf("%s owned by %d, want %d", p, uid, owner.UID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir, 1000); !errors.Is(err, ErrPermission) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("Remove by another user: got %v, want ErrPermission", err)
	}
	if c, err := OpenCheckpoint(dir); err != nil {
		t.Fatalf("refused Remove damaged the image: %v", err)
	} else {
		c.Close()
	}
	if err := Remove(dir, owner.UID); err != nil {
		t.Fatalf("Remove by the owner: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Error("image still there")
	}
	// Root removes anybody's image.
	dir2 := filepath.Join(t.TempDir(), "ckpt")
	if _, err := WriteCheckpoint(dir2, engine, testConfig("c"), WriteOptions{Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir2, 0); err != nil {
		t.Fatalf("Remove by root: %v", err)
	}
}

func TestCPUFeatures(t *testing.T) {
	cpuinfo := `processor	: 0
vendor_id	: AuthenticAMD
flags		: fpu sse2 avx2 avx512f hypervisor constant_tsc sha_ni
bugs		: sysret_ss_attrs

processor	: 1
flags		: fpu sse2 avx2 hypervisor constant_tsc sha_ni
`
	got, err := ParseCPUFeatures(strings.NewReader(cpuinfo))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"avx2", "constant_tsc", "fpu", "hypervisor", "sha_ni", "sse2"}; !slices.Equal(got, want) {
		t.Errorf("ParseCPUFeatures: %v, want %v (common to every cpu)", got, want)
	}
	arm := "processor\t: 0\nFeatures\t: fp asimd aes sha2 crc32 atomics\n"
	if got, err := ParseCPUFeatures(strings.NewReader(arm)); err != nil || !slices.Contains(got, "atomics") {
		t.Errorf("arm64 Features: %v %v", got, err)
	}
	if _, err := ParseCPUFeatures(strings.NewReader("processor: 0\n")); err == nil {
		t.Error("cpuinfo without flags accepted")
	}
	image := []string{"avx512f", "avx2", "hypervisor", "tsc_known_freq", "sha_ni", "avx512f"}
	host := []string{"avx2", "sse2"}
	if got := MissingCPUFeatures(image, host); !slices.Equal(got, []string{"avx512f", "sha_ni"}) {
		t.Errorf("MissingCPUFeatures: %v", got)
	}
	if got := MissingCPUFeatures(host, image); !slices.Equal(got, []string{"sse2"}) {
		t.Errorf("MissingCPUFeatures reversed: %v", got)
	}
	if runtime.GOOS != "linux" {
		return
	}
	h, err := HostInfo()
	if err != nil {
		t.Fatal(err)
	}
	if h.Kernel == "" || h.Arch != runtime.GOARCH || len(h.CPUFeatures) == 0 {
		t.Errorf("HostInfo: %+v", h)
	}
	if runtime.GOARCH == "amd64" && !slices.Contains(h.CPUFeatures, "sse2") {
		t.Errorf("amd64 host without sse2: %v", h.CPUFeatures)
	}
	if m := MissingCPUFeatures(h.CPUFeatures, h.CPUFeatures); len(m) != 0 {
		t.Errorf("host misses its own features: %v", m)
	}
}

func TestReadClocks(t *testing.T) {
	if runtime.GOOS != "linux" {
		testutil.SkipOrFail(t, "clocks are read on Linux only")
	}
	a, err := ReadClocks()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadClocks()
	if err != nil {
		t.Fatal(err)
	}
	if a.Monotonic <= 0 || a.Boottime < a.Monotonic || b.Monotonic < a.Monotonic || b.Boottime < a.Boottime {
		t.Errorf("clocks: %+v then %+v", a, b)
	}
	if d := time.Since(a.Realtime); d < 0 || d > time.Minute {
		t.Errorf("realtime %v is %v away", a.Realtime, d)
	}
}
