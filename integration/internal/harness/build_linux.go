package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// NerdctlVersion is the nerdctl release the tests use: the newest one the module proxy serves
// here. It is its own module (with its own containerd client), so our go.mod cannot pin it.
const NerdctlVersion = "v2.2.2"

// Binaries are the absolute paths of every program the tests run.
type Binaries struct {
	Containerd string
	Ctr        string
	RuncShim   string // containerd-shim-runc-v2
	Nerdctl    string
	Cryo       string
	CryoShim   string // containerd-shim-cryo-v2
	// PathDirs go first on the daemon's PATH: containerd finds shims there.
	PathDirs []string
	// Runc is Debian's runc, used by the runc shim.
	Runc string
}

// Go returns the go command the tests use: $GO, the one on PATH, or /usr/local/go/bin/go.
func Go() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if g, err := exec.LookPath("go"); err == nil {
		return g
	}
	return "/usr/local/go/bin/go"
}

// RepoRoot returns the directory of our go.mod, found from the working directory.
func RepoRoot() (string, error) {
	out, err := exec.Command(Go(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the cryo module")
	}
	return filepath.Dir(mod), nil
}

// CacheRoot is where pinned builds are kept between runs: $CRYO_INTEGRATION_CACHE,
// $XDG_CACHE_HOME/cryo-integration, or /var/cache/cryo-integration.
func CacheRoot() string {
	if d := os.Getenv("CRYO_INTEGRATION_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "cryo-integration")
	}
	return "/var/cache/cryo-integration"
}

// BuildLog receives progress lines (cold builds take minutes); nil discards them.
type BuildLog func(format string, args ...any)

// Build returns every binary the tests need. containerd, ctr and the runc shim are built at the
// versions our go.mod pins and cached under CacheRoot()/<hash of go.mod, go.sum, Go version>;
// nerdctl is cached the same way keyed by its version; bin/cryo and bin/containerd-shim-cryo-v2
// are built from the working tree into outDir on every call (seconds with a warm build cache).
func Build(ctx context.Context, outDir string, logf BuildLog) (*Binaries, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	goVersion, err := exec.CommandContext(ctx, Go(), "env", "GOVERSION").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOVERSION: %w", err)
	}
	key, err := hashFiles(bytes.TrimSpace(goVersion), filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))
	if err != nil {
		return nil, err
	}
	pinned := filepath.Join(CacheRoot(), key)
	if err := os.MkdirAll(pinned, 0o755); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	unlock, err := lockDir(ctx, pinned)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Leftovers of a build that was killed (test timeout): we hold the lock, nobody uses them.
	stale, _ := filepath.Glob(filepath.Join(pinned, "*.tmp*"))
	src, _ := filepath.Glob(filepath.Join(pinned, "nerdctl-src.*"))
	for _, p := range append(stale, src...) {
		os.RemoveAll(p)
	}

	b := &Binaries{
		Containerd: filepath.Join(pinned, "containerd"),
		Ctr:        filepath.Join(pinned, "ctr"),
		RuncShim:   filepath.Join(pinned, "containerd-shim-runc-v2"),
		Nerdctl:    filepath.Join(pinned, "nerdctl-"+NerdctlVersion),
		Cryo:       filepath.Join(outDir, "cryo"),
		CryoShim:   filepath.Join(outDir, "containerd-shim-cryo-v2"),
		PathDirs:   []string{outDir, pinned},
	}
	const ctrd = "github.com/containerd/containerd/v2/cmd/"
	pinnedBuilds := []struct {
		out, pkg string
		env      []string
		tags     string
	}{
		{b.Containerd, ctrd + "containerd", nil, ""},
		{b.Ctr, ctrd + "ctr", nil, ""},
		// Built the way containerd's Makefile builds it: static, no grpc server code.
		{b.RuncShim, ctrd + "containerd-shim-runc-v2", []string{"CGO_ENABLED=0"}, "urfave_cli_no_docs no_grpc"},
	}
	for _, pb := range pinnedBuilds {
		if exists(pb.out) {
			continue
		}
		args := []string{"build", "-trimpath"}
		if pb.tags != "" {
			args = append(args, "-tags", pb.tags)
		}
		start := time.Now()
		logf("building %s (pinned by go.mod) into %s", pb.pkg, pinned)
		if err := goBuild(ctx, root, pb.env, pb.out, append(args, pb.pkg)...); err != nil {
			return nil, err
		}
		logf("built %s in %s", filepath.Base(pb.out), time.Since(start).Round(time.Second))
	}
	if !exists(b.Nerdctl) {
		start := time.Now()
		logf("building nerdctl %s into %s", NerdctlVersion, pinned)
		if err := buildNerdctl(ctx, pinned, b.Nerdctl); err != nil {
			return nil, err
		}
		logf("built nerdctl in %s", time.Since(start).Round(time.Second))
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	// cryo is built with cgo, which links the runtime's nsenter constructor (joining user and
	// time namespaces before the Go runtime starts).
	// The shim is built as the Makefile builds it: static (no cgo), without grpc and the CLI
	// doc generators, as containerd builds its runc shim; its containers' inits are cryo's.
	if err := goBuild(ctx, root, nil, b.Cryo, "build", "-trimpath", "./cmd/cryo"); err != nil {
		return nil, err
	}
	if err := goBuild(ctx, root, []string{"CGO_ENABLED=0"}, b.CryoShim, "build", "-trimpath", "-tags", ShimTags, "./cmd/containerd-shim-cryo-v2"); err != nil {
		return nil, err
	}
	if b.Runc, err = exec.LookPath("runc"); err != nil {
		return nil, fmt.Errorf("runc (Debian package runc) not found: %w", err)
	}
	return b, nil
}

// ShimTags are the build tags of containerd-shim-cryo-v2 (the Makefile's SHIM_TAGS).
const ShimTags = "urfave_cli_no_docs,no_grpc"

// goBuild runs `go <args> -o out` in dir, writing to a temporary name first so an interrupted
// build never leaves a truncated binary in the cache.
func goBuild(ctx context.Context, dir string, env []string, out string, args ...string) error {
	tmp := fmt.Sprintf("%s.tmp%d", out, os.Getpid())
	full := append([]string{args[0], "-o", tmp}, args[1:]...)
	cmd := exec.CommandContext(ctx, Go(), full...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
	cmd.Env = append(cmd.Env, env...)
	if o, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("go %s: %w\n%s", strings.Join(full, " "), err, o)
	}
	return os.Rename(tmp, out)
}

// buildNerdctl builds nerdctl inside a copy of its own module. Its go.mod replaces
// github.com/containerd/nerdctl/mod/tigron with a nested module that the release zip does not
// contain; cmd/nerdctl links only tigron's tig.T interface, so a stub module stands in for it.
func buildNerdctl(ctx context.Context, cacheDir, out string) error {
	dl := exec.CommandContext(ctx, Go(), "mod", "download", "-json", "github.com/containerd/nerdctl/v2@"+NerdctlVersion)
	dl.Dir = os.TempDir() // outside any module
	dl.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	o, err := dl.Output()
	if err != nil {
		return fmt.Errorf("go mod download nerdctl %s: %w", NerdctlVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(o, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("go mod download nerdctl: no module dir in %q: %v", o, err)
	}
	src := filepath.Join(cacheDir, fmt.Sprintf("nerdctl-src.%d", os.Getpid()))
	defer os.RemoveAll(src)
	if err := copyTree(mod.Dir, src); err != nil {
		return fmt.Errorf("copy nerdctl module: %w", err)
	}
	tig := filepath.Join(src, "mod", "tigron", "tig")
	if err := os.MkdirAll(tig, 0o755); err != nil {
		return err
	}
	stubMod := "module github.com/containerd/nerdctl/mod/tigron\n\ngo 1.23.0\n"
	stubSrc := `// Package tig stands in for nerdctl's unpublished test module; only this interface is linked.
package tig

type T interface {
	Helper()
	FailNow()
	Fail()
	Log(args ...any)
	Name() string
	TempDir() string
	Skip(args ...any)
}
`
	if err := os.WriteFile(filepath.Join(src, "mod", "tigron", "go.mod"), []byte(stubMod), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tig, "t.go"), []byte(stubSrc), 0o644); err != nil {
		return err
	}
	return goBuild(ctx, src, []string{"CGO_ENABLED=0"}, out, "build", "-trimpath", "./cmd/nerdctl")
}

func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
}

func hashFiles(extra []byte, files ...string) (string, error) {
	h := sha256.New()
	h.Write(extra)
	h.Write([]byte(runtime.GOARCH))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", f, err)
		}
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// lockDir takes an exclusive flock on dir/.lock so that two test runs do not build into the
// same cache directory at once.
func lockDir(ctx context.Context, dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
