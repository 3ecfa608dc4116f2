package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
)

// shmemTable collects the shared memory objects (memfd, shared anonymous
// memory) of the tree at dump time. Each object is dumped once, through a
// file the engine opens on it (/proc/PID/map_files/<range> for a mapping,
// /proc/PID/fd/N for an fd), skipping holes with SEEK_DATA/SEEK_HOLE.
type shmemTable struct {
	dir   string
	objs  map[uint64]*image.Shmem
	order []uint64
	bytes uint64
	files []string
}

func newShmemTable(dir string) *shmemTable {
	return &shmemTable{dir: dir, objs: map[uint64]*image.Shmem{}}
}

// add dumps the object id (if not done yet), opening it with path.
func (s *shmemTable) add(id uint64, path string, memfd bool, name string) error {
	if _, ok := s.objs[id]; ok {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open shared memory object: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	obj := &image.Shmem{ID: id, Size: uint64(st.Size), Memfd: memfd, Name: name}
	if memfd {
		if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err == nil {
			obj.Seals = seals
		}
	}
	obj.PagesFile = image.ShmemPagesFile(id)
	out, err := os.OpenFile(filepath.Join(s.dir, obj.PagesFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	fd := int(f.Fd())
	for off := int64(0); off < st.Size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return fmt.Errorf("SEEK_DATA: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("SEEK_HOLE: %w", err)
		}
		n, err := io.Copy(out, io.NewSectionReader(f, data, hole-data))
		if err != nil {
			return fmt.Errorf("copy shared memory: %w", err)
		}
		obj.Runs = append(obj.Runs, image.PageRun{Addr: uint64(data), Len: uint64(n), Off: obj.PagesSize})
		obj.PagesSize += uint64(n)
		off = hole
	}
	if err := out.Close(); err != nil {
		return err
	}
	s.objs[id] = obj
	s.order = append(s.order, id)
	s.bytes += obj.PagesSize
	s.files = append(s.files, obj.PagesFile)
	return nil
}

func (s *shmemTable) inventory(inv *image.Inventory) {
	for _, id := range s.order {
		inv.Shmems = append(inv.Shmems, *s.objs[id])
	}
}

// shmemFd returns an fd of shared memory object id in rt, parked above the
// restored fd numbers: created (memfd_create, ftruncate, contents written by
// the engine) by the first task that needs it, pulled by the others.
func (r *restorer) shmemFd(rt *rtask, id uint64) (uint64, error) {
	if h, ok := r.shmemHolders[id]; ok {
		if h.rt == rt {
			return uint64(h.fd), nil
		}
		fd, err := r.pull(rt, h, rt.base)
		if err != nil {
			return 0, err
		}
		if fd, err = r.park(rt, fd, -1, rt.base); err != nil {
			return 0, err
		}
		rt.temps = append(rt.temps, int(fd))
		return fd, nil
	}
	obj := r.shmems[id]
	if obj == nil {
		return 0, fmt.Errorf("shared memory object %d is not in the inventory", id)
	}
	t := rt.lead()
	name := obj.Name
	if !obj.Memfd {
		name = "cryo-shmem"
	}
	if err := t.writeMem(r.scratch, append([]byte(name), 0)); err != nil {
		return 0, err
	}
	flags := uint64(unix.MFD_CLOEXEC)
	if obj.Seals != 0 && obj.Seals != unix.F_SEAL_SEAL {
		flags |= unix.MFD_ALLOW_SEALING
	}
	fd, err := t.sys("memfd_create", unix.SYS_MEMFD_CREATE, r.scratch, flags)
	if err != nil {
		return 0, err
	}
	if fd, err = r.park(rt, fd, -1, rt.base); err != nil {
		return 0, err
	}
	rt.temps = append(rt.temps, int(fd))
	r.shmemHolders[id] = holder{rt, int(fd)}
	// Fill it from the engine, through its own copy of the fd.
	pidfd, err := unix.PidfdOpen(rt.hostPid, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(pidfd)
	efd, err := unix.PidfdGetfd(pidfd, int(fd), 0)
	if err != nil {
		return 0, fmt.Errorf("pidfd_getfd: %w", err)
	}
	f := os.NewFile(uintptr(efd), "shmem")
	defer f.Close()
	if err := f.Truncate(int64(obj.Size)); err != nil {
		return 0, err
	}
	if len(obj.Runs) > 0 {
		src, err := r.openImageFile(filepath.Base(obj.PagesFile))
		if err != nil {
			return 0, err
		}
		defer src.Close()
		for _, run := range obj.Runs {
			if _, err := io.Copy(io.NewOffsetWriter(f, int64(run.Addr)), io.NewSectionReader(src, int64(run.Off), int64(run.Len))); err != nil {
				return 0, fmt.Errorf("fill shared memory %d: %w", id, err)
			}
		}
	}
	return fd, nil
}

// sealShmems adds the saved seals once every task has mapped its objects.
func (r *restorer) sealShmems() error {
	for id, h := range r.shmemHolders {
		obj := r.shmems[id]
		if obj == nil || obj.Seals == 0 {
			continue
		}
		pidfd, err := unix.PidfdOpen(h.rt.hostPid, 0)
		if err != nil {
			return err
		}
		efd, err := unix.PidfdGetfd(pidfd, h.fd, 0)
		unix.Close(pidfd)
		if err != nil {
			return err
		}
		_, err = unix.FcntlInt(uintptr(efd), unix.F_ADD_SEALS, obj.Seals)
		unix.Close(efd)
		if err != nil {
			return fmt.Errorf("seal memfd %q: %w", obj.Name, err)
		}
	}
	return nil
}
