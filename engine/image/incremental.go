package image

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Incremental images.
//
// An incremental image (a dump with a parent) writes only the pages that
// changed since its parent; a PageRun whose File is i > 0 says that its bytes
// are at Off in Mm.ParentPages[i-1], a pages file of an earlier generation,
// named relative to the image directory: "parent/pages-<pid>.img" for the
// parent's own pages, "parent/parent/pages-<pid>.img" for the
// grandparent's, and so on (the chain is flattened at dump time, so a
// restore never reads the parents' records, only their pages files). The
// packer lays the chain out that way (the parent's files under parent/).
//
// TrackingFile records the dirty-page tracker the engine armed in each task
// after a dump that left the tree running: the next dump that names this
// image as its parent reuses the parent's pages for every page that the
// tracker proves unwritten.

// ParentPages names a pages file of an earlier generation and its size.
type ParentPages struct {
	Name string `json:"name"`
	Size uint64 `json:"size"`
}

// ParentDir is the directory, inside an image directory, that holds the
// parent image's files.
const ParentDir = "parent"

// ValidParentPagesName says whether name is "parent/" repeated at least once,
// followed by the name of a pages file: the only names a PageRun may refer to.
func ValidParentPagesName(name string) bool {
	rest, ok := strings.CutPrefix(name, ParentDir+"/")
	if !ok {
		return false
	}
	for {
		r, ok := strings.CutPrefix(rest, ParentDir+"/")
		if !ok {
			break
		}
		rest = r
	}
	return strings.HasPrefix(rest, pagesPrefix) && strings.HasSuffix(rest, ".img") &&
		!strings.ContainsAny(rest, "/\\") && rest != "." && rest != ".."
}

// PagesFileOf returns the name (relative to the image directory) and the size
// of the file a run of this address space refers to: 0 is the task's own
// PagesFile, i > 0 is ParentPages[i-1].
func (mm *Mm) PagesFileOf(file int) (string, uint64, bool) {
	if file == 0 {
		return mm.PagesFile, mm.PagesSize, true
	}
	if file < 0 || file > len(mm.ParentPages) {
		return "", 0, false
	}
	p := mm.ParentPages[file-1]
	return p.Name, p.Size, true
}

// validateParentPages checks the names of the parent pages files.
func (mm *Mm) validateParentPages() error {
	if len(mm.ParentPages) > 1<<16 {
		return bad("%d parent pages files", len(mm.ParentPages))
	}
	seen := map[string]bool{}
	for _, p := range mm.ParentPages {
		if !ValidParentPagesName(p.Name) || seen[p.Name] || p.Size > 1<<46 {
			return bad("parent pages file %q (%d bytes) invalid or repeated", p.Name, p.Size)
		}
		seen[p.Name] = true
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
