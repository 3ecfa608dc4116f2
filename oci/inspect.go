package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Summary is what `cryo inspect` shows of a checkpoint: in the spirit of
// IRIX `cpr -i`, the revision, processes with their credentials, working
// directory and open files, the time of the checkpoint and the sizes.
type Summary struct {
	Path           string            `json:"path"`
	Name           string            `json:"name"`
	ContainerID    string            `json:"containerID"`
	FormatRevision int               `json:"formatRevision"`
	EngineVersion  string            `json:"engineVersion,omitempty"`
	Created        time.Time         `json:"created"`
	Host           Host              `json:"host"`
	Time           Clocks            `json:"time"`
	Manifest       digest.Digest     `json:"manifest"`
	Parent         digest.Digest     `json:"parent,omitempty"`
	Processes      []Process         `json:"processes"`
	Layers         []LayerSummary    `json:"layers"`
	Files          []File            `json:"files"`
	TotalSize      int64             `json:"totalSize"` // manifest, config and layers
	Engine         map[string]string `json:"engine,omitempty"`
	// Verified is set when every blob was hashed (an opened Checkpoint);
	// Inspect hashes only the state layers and checks the others' sizes.
	Verified bool `json:"verified"`
}

// LayerSummary describes one layer.
type LayerSummary struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	Path      string        `json:"path,omitempty"`
	Offset    int64         `json:"offset,omitempty"`
}

// Inspect summarises the checkpoint at path (layout or archive). It hashes
// the state layers and checks every other blob's size, but leaves the
// hashing of pages to OpenCheckpoint (restore), so it stays fast on big
// images.
func Inspect(p string) (*Summary, error) {
	c, err := openCheckpoint(p, openOptions{bulkUnhashed: true})
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	defer c.Close()
	return c.Summary(), nil
}

// Summary summarises an opened checkpoint.
func (c *Checkpoint) Summary() *Summary {
	s := &Summary{
		Path:           c.Source,
		Name:           c.Name,
		ContainerID:    c.ContainerID,
		FormatRevision: c.Config.FormatRevision,
		EngineVersion:  c.Config.EngineVersion,
		Created:        c.Created,
		Host:           c.Config.Host,
		Time:           c.Config.Time,
		Manifest:       c.ManifestDescriptor.Digest,
		Parent:         c.Config.Parent,
		Processes:      c.Config.Processes,
		Files:          c.Files,
		TotalSize:      c.ManifestDescriptor.Size + c.Manifest.Config.Size,
		Engine:         c.Config.Engine,
		Verified:       c.fullyVerified,
	}
	for _, l := range c.Manifest.Layers {
		ls := LayerSummary{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size, Path: l.Annotations[AnnotationPath]}
		ls.Offset, _ = strconv.ParseInt(l.Annotations[AnnotationOffset], 10, 64)
		s.Layers = append(s.Layers, ls)
		s.TotalSize += l.Size
	}
	if s.Processes == nil {
		s.Processes = []Process{}
	}
	if s.Files == nil {
		s.Files = []File{}
	}
	return s
}

// WriteJSON writes the summary as indented JSON.
func (s *Summary) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteText writes the summary for people, like `cpr -i` did.
func (s *Summary) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }
	p("CHECKPOINT\t%s\n", s.Path)
	p("  name:\t%s\n", s.Name)
	p("  container:\t%s\n", s.ContainerID)
	rev := strconv.Itoa(s.FormatRevision)
	if s.EngineVersion != "" {
		rev += " (engine " + s.EngineVersion + ")"
	}
	p("  revision:\t%s\n", rev)
	p("  created:\t%s\n", s.Created.Format(time.RFC3339Nano))
	p("  host:\tkernel %s, %s, %d CPU features\n", orDash(s.Host.Kernel), orDash(s.Host.Arch), len(s.Host.CPUFeatures))
	if !s.Time.Realtime.IsZero() || s.Time.Monotonic != 0 {
		p("  clocks:\trealtime %s, monotonic %s, boottime %s\n", s.Time.Realtime.Format(time.RFC3339Nano),
			time.Duration(s.Time.Monotonic), time.Duration(s.Time.Boottime))
	}
	p("  manifest:\t%s\n", s.Manifest)
	if s.Parent != "" {
		p("  parent:\t%s (incremental)\n", s.Parent)
	}
	verified := "state layers hashed, other blobs' sizes checked"
	if s.Verified {
		verified = "every blob hashed"
	}
	p("  verified:\t%s\n", verified)
	p("  size:\t%s\n", humanBytes(s.TotalSize))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nPROCESSES (%d)\n", len(s.Processes))
	if len(s.Processes) > 0 {
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  PID\tPPID\tUID\tGID\tTHREADS\tMEMORY\tCOMM\tCWD\tARGS")
		for _, pr := range s.Processes {
			fmt.Fprintf(tw, "  %d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", pr.Pid, pr.PPid, pr.UID, pr.GID, pr.Threads,
				humanBytes(int64(pr.MemBytes)), orDash(pr.Comm), orDash(pr.Cwd), orDash(strings.Join(pr.Args, " ")))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, pr := range s.Processes {
			if len(pr.Files)+len(pr.Sockets) == 0 {
				continue
			}
			fmt.Fprintf(w, "  pid %d open files:\n", pr.Pid)
			for _, f := range pr.Files {
				fmt.Fprintf(w, "    %s\n", f)
			}
			for _, so := range pr.Sockets {
				fmt.Fprintf(w, "    socket %s\n", so)
			}
		}
	}

	fmt.Fprintf(w, "\nLAYERS (%d)\n", len(s.Layers))
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  MEDIA TYPE\tSIZE\tPATH\tDIGEST")
	for _, l := range s.Layers {
		where := l.Path
		if l.Offset != 0 {
			where += "@" + strconv.FormatInt(l.Offset, 10)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", l.MediaType, humanBytes(l.Size), orDash(where), l.Digest)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nFILES (%d)\n", len(s.Files))
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, f := range s.Files {
		kind := "record"
		switch {
		case f.Dir:
			kind = "dir"
		case f.Pages:
			kind = "pages"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", kind, humanBytes(f.Size), f.Path)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(s.Engine) > 0 {
		fmt.Fprintf(w, "\nENGINE\n")
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		keys := make([]string, 0, len(s.Engine))
		for k := range s.Engine {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s:\t%s\n", k, s.Engine[k])
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Host.CPUFeatures) > 0 {
		fmt.Fprintf(w, "\nCPU FEATURES\n")
		line := " "
		for _, f := range s.Host.CPUFeatures {
			if len(line)+1+len(f) > 78 {
				fmt.Fprintln(w, line)
				line = " "
			}
			line += " " + f
		}
		fmt.Fprintln(w, line)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes formats a byte count with binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ListEntry is a checkpoint image found by List.
type ListEntry struct {
	Path        string        `json:"path"`
	Name        string        `json:"name"`
	ContainerID string        `json:"containerID"`
	Created     time.Time     `json:"created"`
	Manifest    digest.Digest `json:"manifest"`
	Archive     bool          `json:"archive"`
	Owner       int           `json:"owner"` // uid owning the image, -1 if unknown
}

// List returns the checkpoint images (layout directories and .tar archives)
// directly inside dir, oldest first. It reads only their index.json: what
// is listed is not verified. Entries whose names start with "." (temporary
// files of writers) and anything that is not a checkpoint are skipped.
func List(dir string) ([]ListEntry, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	var out []ListEntry
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		le, err := peek(p)
		if err != nil {
			continue
		}
		out = append(out, *le)
	}
	slices.SortFunc(out, func(a, b ListEntry) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	return out, nil
}

// peek reads what index.json says of the image at p (layout or archive).
func peek(p string) (*ListEntry, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	var ib []byte
	switch {
	case fi.IsDir():
		if err := checkLayoutDirs(p); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if ib, err = readSmallFile(filepath.Join(p, ocispec.ImageIndexFile), maxIndexSize); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%s: %w: no %s", p, ErrNotCheckpoint, ocispec.ImageIndexFile)
			}
			return nil, err
		}
	case fi.Mode().IsRegular():
		if ib, err = readArchiveIndex(p); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	default:
		return nil, fmt.Errorf("%s: %w", p, ErrNotCheckpoint)
	}
	idx, err := parseIndex(ib)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	owner, ok := fileOwner(fi)
	if !ok {
		owner = -1
	}
	return &ListEntry{Path: p, Name: idx.name, ContainerID: idx.container, Created: idx.created,
		Manifest: idx.manifest.Digest, Archive: !fi.IsDir(), Owner: owner}, nil
}

// Remove deletes the checkpoint image at p (layout directory or archive) on
// behalf of user uid: only its owner (the owner of the directory or
// archive) or root (uid 0) may (else ErrPermission). p must be a checkpoint
// (ErrNotCheckpoint otherwise: Remove never deletes anything else).
func Remove(p string, uid int) error {
	le, err := peek(p)
	if err != nil {
		return fmt.Errorf("remove checkpoint: %w", err)
	}
	if uid != 0 && (le.Owner < 0 || le.Owner != uid) {
		return fmt.Errorf("remove checkpoint %s: owned by uid %d, not %d: %w", p, le.Owner, uid, ErrPermission)
	}
	if le.Archive {
		err = os.Remove(p)
	} else {
		// index.json first: a removal cut short leaves no valid image.
		err = os.Remove(filepath.Join(p, ocispec.ImageIndexFile))
		if err == nil {
			err = os.RemoveAll(p)
		}
	}
	if err != nil {
		return fmt.Errorf("remove checkpoint: %w", err)
	}
	return nil
}
