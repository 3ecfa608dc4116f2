package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Image is a single-layer OCI image built in memory: no registry, no docker.
type Image struct {
	Name    string // io.containerd.image.name, e.g. localhost/bb:latest
	Cmd     []string
	Env     []string
	entries map[string]entry
}

type entry struct {
	mode int64 // permission bits
	typ  byte  // tar.TypeReg, TypeDir, TypeSymlink
	data []byte
	link string
}

// layerTime is the fixed mtime of every layer entry, so that the same inputs give the same digests.
var layerTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// NewImage returns an image with the usual top-level directories and a root user.
func NewImage(name string) *Image {
	img := &Image{
		Name:    name,
		Cmd:     []string{"/bin/sh"},
		Env:     []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		entries: map[string]entry{},
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sys"} {
		img.AddDir(d, 0o755)
	}
	img.AddDir("tmp", 0o1777)
	img.AddFile("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	img.AddFile("etc/group", []byte("root:x:0:\n"), 0o644)
	return img
}

func (img *Image) addParents(p string) {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := img.entries[d]; !ok {
			img.entries[d] = entry{mode: 0o755, typ: tar.TypeDir}
		}
	}
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// AddDir adds a directory (and its parents).
func (img *Image) AddDir(p string, mode int64) {
	p = clean(p)
	img.addParents(p)
	img.entries[p] = entry{mode: mode, typ: tar.TypeDir}
}

// AddFile adds a regular file (and its parents).
func (img *Image) AddFile(p string, data []byte, mode int64) {
	p = clean(p)
	img.addParents(p)
	img.entries[p] = entry{mode: mode, typ: tar.TypeReg, data: data}
}

// AddSymlink adds a symbolic link p -> target.
func (img *Image) AddSymlink(p, target string) {
	p = clean(p)
	img.addParents(p)
	img.entries[p] = entry{mode: 0o777, typ: tar.TypeSymlink, link: target}
}

// AddBusybox adds /bin/busybox (a static busybox, Debian's busybox-static at /bin/busybox by
// default) and one /bin/<applet> symlink per applet it lists.
func (img *Image) AddBusybox(ctx context.Context, busybox string) error {
	data, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	out, err := exec.CommandContext(ctx, busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", busybox, err)
	}
	img.AddFile("bin/busybox", data, 0o755)
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			img.AddSymlink("bin/"+a, "busybox")
		}
	}
	return nil
}

// BusyboxImage is the image most tests run: busybox and its applets, Cmd /bin/sh.
func BusyboxImage(ctx context.Context, name string) (*Image, error) {
	img := NewImage(name)
	if err := img.AddBusybox(ctx, "/bin/busybox"); err != nil {
		return nil, err
	}
	return img, nil
}

// AddGoProgram compiles the Go package pkg (a directory or import path, built from dir) as a
// static binary (CGO_ENABLED=0) and adds it at p.
func (img *Image) AddGoProgram(ctx context.Context, dir, pkg, p string) error {
	tmp, err := os.MkdirTemp("", "cryo-it-goprog-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "prog")
	if err := goBuild(ctx, dir, []string{"CGO_ENABLED=0"}, out, "build", "-trimpath", pkg); err != nil {
		return err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	img.AddFile(p, data, 0o755)
	return nil
}

// GoProgramSourceImage builds an image whose /bin/<prog> is the static Go program given as the
// source of a single main package (with busybox beside it when withBusybox, for exec and sh);
// Cmd is /bin/<prog>.
func GoProgramSourceImage(ctx context.Context, name, prog, source string, withBusybox bool) (*Image, error) {
	img := NewImage(name)
	if withBusybox {
		if err := img.AddBusybox(ctx, "/bin/busybox"); err != nil {
			return nil, err
		}
	}
	src, err := os.MkdirTemp("", "cryo-it-gosrc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	files := map[string]string{"go.mod": "module cryoit/" + prog + "\n\ngo 1.22\n", "main.go": source}
	for f, s := range files {
		if err := os.WriteFile(filepath.Join(src, f), []byte(s), 0o644); err != nil {
			return nil, err
		}
	}
	if err := img.AddGoProgram(ctx, src, ".", "bin/"+prog); err != nil {
		return nil, err
	}
	img.Cmd = []string{"/bin/" + prog}
	return img, nil
}

// layer writes the uncompressed layer tar: sorted entries, owner 0:0, fixed times.
func (img *Image) layer() ([]byte, error) {
	names := make([]string, 0, len(img.entries))
	for n := range img.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := img.entries[n]
		h := &tar.Header{Typeflag: e.typ, Name: n, Mode: e.mode, ModTime: layerTime, Linkname: e.link, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg:
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Platform    map[string]string `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// WriteArchive writes the image as an OCI image-layout tar (oci-layout, index.json, blobs/)
// with the io.containerd.image.name annotation that `ctr images import` and `nerdctl load` use.
func (img *Image) WriteArchive(w io.Writer) error {
	layer, err := img.layer()
	if err != nil {
		return err
	}
	blobs := map[string][]byte{}
	put := func(mt string, data []byte) descriptor {
		sum := sha256.Sum256(data)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = data
		return descriptor{MediaType: mt, Digest: d, Size: len(data)}
	}
	layerDesc := put("application/vnd.oci.image.layer.v1.tar", layer)
	config, err := json.Marshal(map[string]any{
		"architecture": goarch(),
		"os":           "linux",
		"config":       map[string]any{"Env": img.Env, "Cmd": img.Cmd, "WorkingDir": "/"},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
		"history":      []map[string]string{{"created_by": "cryo integration harness"}},
	})
	if err != nil {
		return err
	}
	configDesc := put("application/vnd.oci.image.config.v1+json", config)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configDesc,
		"layers":        []descriptor{layerDesc},
	})
	if err != nil {
		return err
	}
	mdesc := put("application/vnd.oci.image.manifest.v1+json", manifest)
	mdesc.Platform = map[string]string{"architecture": goarch(), "os": "linux"}
	tag := img.Name[strings.LastIndex(img.Name, ":")+1:]
	mdesc.Annotations = map[string]string{"io.containerd.image.name": img.Name, "org.opencontainers.image.ref.name": tag}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{mdesc},
	})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	file := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: layerTime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", index); err != nil {
		return err
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: layerTime}); err != nil {
			return err
		}
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := file("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), blobs[d]); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteArchiveFile writes the archive to a new file at p.
func (img *Image) WriteArchiveFile(p string) (err error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	return img.WriteArchive(f)
}

// goarch is the OCI architecture of the machine the tests run on.
func goarch() string { return runtime.GOARCH }
