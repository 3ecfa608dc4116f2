package image

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Incremental images.
//
// An incremental image (a dump with a parent) writes only the pages that
// changed since its parent; a PageRun whose File is i > 0 says that its bytes
// are at Off in Mm.ParentPages[i-1], the page data of one task in an earlier
// generation. Page data may be split into parts (Mm.PagesParts): a run's Off
// is then an offset in the concatenation of the generation's files, and
// ParentPages records that generation's file list and part size as its own
// Mm did, with names relative to the image directory:
// "parent/pages-<pid>.img" (then "parent/pages-<pid>-1.img"...) for the
// parent's own pages, "parent/parent/pages-<pid>.img" for the grandparent's,
// and so on (the chain is flattened at dump time, so a restore never reads
// the parents' records, only their pages files). The packer lays the chain
// out that way (the parent's files under parent/).
//
// A dump that pre-copies (engine.DumpOptions.PreCopy) copies most pages
// while the tree still runs, into the image's own PreCopyPagesFile files, and
// then only the pages written since: its runs refer to the pre-copied data as
// to a parent generation that lives in the image directory itself, a
// ParentPages entry with a plain name (generation 0).
//
// TrackingFile records the dirty-page tracker the engine armed in each task
// after a dump that left the tree running: the next dump that names this
// image as its parent reuses the parent's pages for every page that the
// tracker proves unwritten.

// ParentPages names the page data of a task in an earlier generation: Name
// holds its first bytes and, when the data is split, Parts the rest, each
// file PartSize bytes but the last; Size is the size of the concatenation.
type ParentPages struct {
	Name     string   `json:"name"`
	Size     uint64   `json:"size"`
	Parts    []string `json:"parts,omitempty"`
	PartSize uint64   `json:"part_size,omitempty"`
}

// PagesData describes the page data a run refers to: Files concatenated
// (Files[k] holds bytes [k*PartSize, (k+1)*PartSize); PartSize is Size when
// there is a single file), Size bytes in all.
type PagesData struct {
	Files    []string
	PartSize uint64
	Size     uint64
}

// ParentDir is the directory, inside an image directory, that holds the
// parent image's files.
const ParentDir = "parent"

// ValidParentPagesName says whether name is "parent/" repeated zero or more
// times, followed by the name of a pages file: the only names a PageRun of
// an earlier generation may refer to (no "parent/": pre-copied pages of the
// image itself).
func ValidParentPagesName(name string) bool {
	_, ok := parentPagesGen(name)
	return ok
}

// PreCopyPagesFile is the name of the pages pre-copied from the task with
// PID pid; PreCopyPagesPartFile(pid, k) the name of its part k >= 1.
func PreCopyPagesFile(pid int) string { return pagesPrefix + strconv.Itoa(pid) + "-pre.img" }

// PreCopyPagesPartFile is the name of part k (k >= 1) of PreCopyPagesFile(pid).
func PreCopyPagesPartFile(pid, k int) string {
	return pagesPrefix + strconv.Itoa(pid) + "-pre-" + strconv.Itoa(k) + ".img"
}

// parentPagesGen returns how many "parent/" a valid parent pages name has.
func parentPagesGen(name string) (int, bool) {
	gen := 0
	rest := name
	for {
		r, ok := strings.CutPrefix(rest, ParentDir+"/")
		if !ok {
			break
		}
		rest = r
		gen++
	}
	return gen, validPagesBase(rest)
}

// validPagesBase says whether name is a plain pages file name (no directory).
func validPagesBase(name string) bool {
	return strings.HasPrefix(name, pagesPrefix) && strings.HasSuffix(name, ".img") &&
		!strings.ContainsAny(name, "/\\") && name != "." && name != ".."
}

// PagesDataOf returns the page data (names relative to the image directory)
// a run of this address space refers to: 0 is the task's own PagesFile and
// PagesParts, i > 0 is ParentPages[i-1].
func (mm *Mm) PagesDataOf(file int) (PagesData, bool) {
	if file == 0 {
		return pagesData(mm.PagesFile, mm.PagesParts, mm.PagesPartSize, mm.PagesSize), true
	}
	if file < 0 || file > len(mm.ParentPages) {
		return PagesData{}, false
	}
	p := mm.ParentPages[file-1]
	return pagesData(p.Name, p.Parts, p.PartSize, p.Size), true
}

func pagesData(first string, parts []string, partSize, size uint64) PagesData {
	d := PagesData{Files: append([]string{first}, parts...), PartSize: partSize, Size: size}
	if len(parts) == 0 {
		d.PartSize = size
	}
	return d
}

// Parent returns the page data as the next generation names it: every file
// moved under ParentDir.
func (d PagesData) Parent() ParentPages {
	p := ParentPages{Name: ParentDir + "/" + d.Files[0], Size: d.Size}
	if len(d.Files) > 1 {
		p.PartSize = d.PartSize
		for _, f := range d.Files[1:] {
			p.Parts = append(p.Parts, ParentDir+"/"+f)
		}
	}
	return p
}

// Len returns the size of part k of the data.
func (d PagesData) Len(k int) uint64 {
	off := uint64(k) * d.PartSize
	if off >= d.Size {
		return 0
	}
	return min(d.PartSize, d.Size-off)
}

// validParts checks that size bytes fit n+1 files of partSize bytes, the
// last one not empty.
func validParts(size, partSize uint64, n int) bool {
	if n == 0 {
		return partSize == 0
	}
	k := uint64(n)
	return partSize != 0 && partSize%PageSize == 0 && partSize <= ^uint64(0)/(k+1) &&
		size > k*partSize && size <= (k+1)*partSize
}

// validateParentPages checks the names and layout of the parent page data:
// every file of one generation's data in that generation's directory, no
// name used twice.
func (mm *Mm) validateParentPages() error {
	if len(mm.ParentPages) > 1<<16 {
		return bad("%d parent pages files", len(mm.ParentPages))
	}
	// The task's own files can't be named again as an earlier generation's.
	seen := map[string]bool{mm.PagesFile: true}
	for _, name := range mm.PagesParts {
		seen[name] = true
	}
	for _, p := range mm.ParentPages {
		gen, ok := parentPagesGen(p.Name)
		if !ok || seen[p.Name] || p.Size > 1<<46 || len(p.Parts) > 1<<16 || !validParts(p.Size, p.PartSize, len(p.Parts)) {
			return bad("parent pages file %q (%d bytes, %d parts of %d) invalid or repeated", p.Name, p.Size, len(p.Parts), p.PartSize)
		}
		seen[p.Name] = true
		for _, name := range p.Parts {
			if g, ok := parentPagesGen(name); !ok || g != gen || seen[name] {
				return bad("parent pages part %q of %q invalid or repeated", name, p.Name)
			}
			seen[name] = true
		}
	}
	return nil
}

// TrackingFile is the record of the dirty-page trackers armed after a dump.
const TrackingFile = "tracking.json"

// Tracking lists the trackers armed in the tasks of a tree that was left
// running, so that the next incremental dump can check that they are still
// the ones armed right after this image was taken.
type Tracking struct {
	Header
	// BootID is /proc/sys/kernel/random/boot_id of the dumping host.
	BootID string    `json:"boot_id"`
	Tasks  []Tracker `json:"tasks"`
}

// Tracker is the write-protect tracker of one task: a userfaultfd in
// UFFD_FEATURE_WP_ASYNC mode, registered on the task's private anonymous
// mappings and kept open in the task itself at Fd (a userfaultfd's
// registrations end with its last file reference).
type Tracker struct {
	Pid       int    `json:"pid"`      // in the tree's PID namespace
	HostPid   int    `json:"host_pid"` // as seen by the engine
	StartTime uint64 `json:"start_time"`
	Fd        int    `json:"fd"`
	// Ino is the inode of the userfaultfd (each one has its own).
	Ino uint64 `json:"ino"`
	// Ranges are the address ranges registered.
	Ranges [][2]uint64 `json:"ranges,omitempty"`
}

// ReadTracking decodes dir/tracking.json; a missing file is (nil, nil).
func ReadTracking(dir string) (*Tracking, error) {
	f, err := os.Open(filepath.Join(dir, TrackingFile))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	return DecodeTracking(f)
}

// DecodeTracking reads and checks a Tracking record.
func DecodeTracking(r io.Reader) (*Tracking, error) {
	var tr Tracking
	if err := readAll(r, &tr); err != nil {
		return nil, fmt.Errorf("%s: %w", TrackingFile, err)
	}
	if err := tr.Header.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", TrackingFile, err)
	}
	for _, t := range tr.Tasks {
		if !validPid(t.Pid) || t.HostPid <= 0 || t.Fd < 0 {
			return nil, fmt.Errorf("%s: %w", TrackingFile, bad("tracker of pid %d at fd %d", t.Pid, t.Fd))
		}
	}
	return &tr, nil
}
