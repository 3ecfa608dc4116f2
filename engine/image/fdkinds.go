package image

import (
	"path/filepath"
	"strconv"
)

// More fd kinds.
const (
	// FdDeleted is a regular file that was deleted while open; Fd.Ghost
	// holds its content, Fd.Path the path it had.
	FdDeleted = "deleted"
)

// Ghost is the content of a regular file that was deleted while open. Fds
// of the tree with the same ID refer to the same inode (each open file
// description is its own Fd.File).
type Ghost struct {
	// ID is the inode at dump time.
	ID uint64 `json:"id"`
	// Data is the name of the raw content file in the image directory
	// (ghost-<id>.img), Size its length.
	Data string `json:"data"`
	Size int64  `json:"size"`
	Mode uint32 `json:"mode"`
	Uid  uint32 `json:"uid"`
	Gid  uint32 `json:"gid"`
}

// GhostFile is the name of the content file of the ghost with inode id.
func GhostFile(id uint64) string { return "ghost-" + strconv.FormatUint(id, 10) + ".img" }

func (f *Fd) validateKind() error {
	switch f.Kind {
	case FdSocket:
		if f.Socket == 0 {
			return bad("socket fd without socket id")
		}
	case FdDeleted:
		g := f.Ghost
		if g == nil || g.Data != GhostFile(g.ID) || g.Size < 0 {
			return bad("deleted file fd without valid content")
		}
		if f.Path == "" || f.Path[0] != '/' || filepath.Clean(f.Path) != f.Path {
			return bad("deleted file path %q", f.Path)
		}
	}
	return nil
}
