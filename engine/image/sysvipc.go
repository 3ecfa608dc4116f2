package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// SysVIPCFile is the record of the System V IPC objects of the tree's own
// IPC namespace (absent when there are none, or the tree shares the IPC
// namespace of the engine).
const SysVIPCFile = "sysvipc.json"

// SysvShmPagesFile names the file holding the content of segment id (a
// pages file: raw bytes, referenced by SysvShm.Runs).
func SysvShmPagesFile(id int) string { return pagesPrefix + "sysvshm-" + strconv.Itoa(id) + ".img" }

// SysVIPC lists the objects of an IPC namespace, each with the id it must get back.
type SysVIPC struct {
	Header
	Shm []SysvShm `json:"shm,omitempty"`
	Msg []SysvMsq `json:"msg,omitempty"`
	Sem []SysvSem `json:"sem,omitempty"`
}

// IPCPerm is the ownership and mode of an IPC object.
type IPCPerm struct {
	Key  int32  `json:"key"`
	ID   int    `json:"id"`
	Mode uint32 `json:"mode"` // permission bits (and SHM_DEST, SHM_LOCKED for segments)
	Uid  uint32 `json:"uid"`
	Gid  uint32 `json:"gid"`
}

// SysvShm is a shared memory segment; its non-zero pages are in PagesFile.
type SysvShm struct {
	IPCPerm
	Size uint64 `json:"size"`
	// PagesFile holds the data; Runs give segment offsets (Addr) and file offsets (Off).
	PagesFile string    `json:"pages_file,omitempty"`
	Runs      []PageRun `json:"runs,omitempty"`
}

// SysvMsq is a message queue with its messages, oldest first.
type SysvMsq struct {
	IPCPerm
	QBytes   uint64    `json:"qbytes"`
	Messages []SysvMsg `json:"messages,omitempty"`
}

// SysvMsg is one queued message.
type SysvMsg struct {
	Type int64  `json:"type"`
	Data []byte `json:"data"`
}

// SysvSem is a semaphore set with its values.
type SysvSem struct {
	IPCPerm
	Values []uint16 `json:"values"`
}

// ReadSysVIPC decodes dir/sysvipc.json; it returns nil without error when
// the image has none.
func ReadSysVIPC(dir string) (*SysVIPC, error) {
	f, err := os.Open(filepath.Join(dir, SysVIPCFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rec SysVIPC
	if err := readAll(f, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", SysVIPCFile, err)
	}
	if err := rec.Header.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", SysVIPCFile, err)
	}
	for _, s := range rec.Shm {
		if len(s.Runs) > 0 && s.PagesFile != SysvShmPagesFile(s.ID) {
			return nil, fmt.Errorf("%s: %w: segment %d has pages file %q", SysVIPCFile, ErrFormat, s.ID, s.PagesFile)
		}
		for _, r := range s.Runs {
			if r.Addr+r.Len < r.Addr || r.Addr+r.Len > s.Size {
				return nil, fmt.Errorf("%s: %w: segment %d run %#x+%#x beyond its size %d", SysVIPCFile, ErrFormat, s.ID, r.Addr, r.Len, s.Size)
			}
		}
	}
	for _, s := range rec.Sem {
		if len(s.Values) == 0 {
			return nil, fmt.Errorf("%s: %w: semaphore set %d without semaphores", SysVIPCFile, ErrFormat, s.ID)
		}
	}
	return &rec, nil
}
