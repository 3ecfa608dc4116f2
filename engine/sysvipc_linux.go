package engine

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
	"github.com/cryo-run/cryo/engine/internal/nsthread"
)

// System V IPC.
//
// The objects of the tree's own IPC namespace are saved: shared memory
// segments (id, key, size, mode, owner, content), message queues (messages
// with their types, read with msgrcv(MSG_COPY), which leaves them queued)
// and semaphore sets (values). The engine reads them from a thread of its
// own that joined the namespace (setns), so the ids and /proc/sysvipc are
// those of the container. A restore recreates them, in the IPC namespace of
// the stub, with the same ids (by writing /proc/sys/kernel/{shm,msg,sem}_next_id
// from a thread that joined it) before any task's memory is rebuilt; a task's
// attachment of a segment (a /SYSV<key> mapping whose inode is the shmid)
// is attached again with shmat at the same address, from the task itself.
// A segment marked for destruction (IPC_RMID while attached) is removed again
// once its attachments are back.
//
// A tree that shares the engine's IPC namespace (no IPC namespace of its
// own) has no objects of its own: those of the host namespace belong to
// others and are left alone (not saved, not refused), but an attachment of a
// host segment is refused, since the restore could not vouch for it.
//
// Not saved: semaphore undo adjustments (SEM_UNDO), the times and last pids
// of the objects, creator ids (the restored objects are created by root).

const (
	ipcCreat  = 0o1000
	ipcExcl   = 0o2000
	ipcNowait = 0o4000
	ipcRmid   = 0
	ipcSet    = 1
	ipcStat   = 2
	msgNoerr  = 0o10000
	msgCopy   = 0o40000
	semGetall = 13
	semSetall = 17
	shmDest   = 0o1000
	shmLocked = 0o2000
	shmLock   = 11
	shmRdonly = 0o10000
	shmExec   = 0o100000
)

// ownIPCNamespace says whether pid is in another IPC namespace than the engine.
func ownIPCNamespace(pid int) (bool, error) {
	a, err := readlinkProc(pid, "ns/ipc")
	if err != nil {
		return false, err
	}
	b, err := os.Readlink("/proc/self/ns/ipc")
	if err != nil {
		return false, err
	}
	return a != b, nil
}

// inIPCNamespace runs fn on an OS thread that joined the IPC namespace of
// pid (nsthread.Run).
func inIPCNamespace(pid int, fn func() error) error {
	return nsthread.Run(pid, "ipc", unix.CLONE_NEWIPC, fn)
}

// sysvRows reads /proc/sysvipc/<kind> (of the calling thread's namespace).
func sysvRows(kind string) ([][]string, error) {
	f, err := os.Open("/proc/sysvipc/" + kind)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows [][]string
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		if !first {
			rows = append(rows, strings.Fields(sc.Text()))
		}
	}
	return rows, sc.Err()
}

// sysvPerm parses key, id, perms and the uid and gid columns of a row.
func sysvPerm(kind string, row []string, uidCol int) (image.IPCPerm, error) {
	var p image.IPCPerm
	if len(row) <= uidCol+1 {
		return p, fmt.Errorf("/proc/sysvipc/%s: short row %q", kind, row)
	}
	key, err1 := strconv.ParseInt(row[0], 10, 32)
	id, err2 := strconv.Atoi(row[1])
	mode, err3 := strconv.ParseUint(row[2], 8, 32)
	uid, err4 := strconv.ParseUint(row[uidCol], 10, 32)
	gid, err5 := strconv.ParseUint(row[uidCol+1], 10, 32)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return p, fmt.Errorf("/proc/sysvipc/%s: row %q: %w", kind, row, err)
	}
	p.Key, p.ID, p.Mode, p.Uid, p.Gid = int32(key), id, uint32(mode), uint32(uid), uint32(gid)
	return p, nil
}

func ipcCall(nr uintptr, a ...uintptr) (uintptr, error) {
	var v [6]uintptr
	copy(v[:], a)
	r, _, e := unix.Syscall6(nr, v[0], v[1], v[2], v[3], v[4], v[5])
	if e != 0 {
		return r, e
	}
	return r, nil
}

// ipcCallPtr is ipcCall with argument at (1 to 3) the Go memory p, which
// stays an unsafe.Pointer until the system call itself (a uintptr made
// earlier may point to where a goroutine stack was before it grew: see
// ptrace.ptracePtr); a are the other arguments in order, without it.
func ipcCallPtr(nr uintptr, at int, p unsafe.Pointer, a ...uintptr) (uintptr, error) {
	var v [5]uintptr
	copy(v[:], a)
	var r uintptr
	var e unix.Errno
	switch at {
	case 1:
		r, _, e = unix.Syscall6(nr, v[0], uintptr(p), v[1], v[2], v[3], v[4])
	case 2:
		r, _, e = unix.Syscall6(nr, v[0], v[1], uintptr(p), v[2], v[3], v[4])
	case 3:
		r, _, e = unix.Syscall6(nr, v[0], v[1], v[2], uintptr(p), v[3], v[4])
	default:
		return 0, fmt.Errorf("ipc call %d: pointer argument %d", nr, at)
	}
	if e != 0 {
		return r, e
	}
	return r, nil
}

// dumpSysvIPC saves the objects of the tree's IPC namespace (d.ownIPC).
func (d *dumper) dumpSysvIPC() error {
	if !d.ownIPC {
		return nil
	}
	rec := &image.SysVIPC{Header: image.NewHeader()}
	var pageFiles []string
	var pageBytes uint64
	err := inIPCNamespace(d.tasks[0].pid, func() error {
		rows, err := sysvRows("shm")
		if err != nil {
			return err
		}
		for _, row := range rows {
			p, err := sysvPerm("shm", row, 7)
			if err != nil {
				return err
			}
			s := image.SysvShm{IPCPerm: p}
			if s.Size, err = strconv.ParseUint(row[3], 10, 64); err != nil {
				return fmt.Errorf("/proc/sysvipc/shm: row %q: %w", row, err)
			}
			n, err := dumpShmContent(d.opts.ImageDir, &s)
			if err != nil {
				return fmt.Errorf("System V shared memory segment %d (key %#x): %w", p.ID, uint32(p.Key), err)
			}
			if s.PagesFile != "" {
				pageFiles, pageBytes = append(pageFiles, s.PagesFile), pageBytes+n
			}
			rec.Shm = append(rec.Shm, s)
		}
		if rows, err = sysvRows("msg"); err != nil {
			return err
		}
		for _, row := range rows {
			p, err := sysvPerm("msg", row, 7)
			if err != nil {
				return err
			}
			q := image.SysvMsq{IPCPerm: p}
			if err := dumpMsq(&q); err != nil {
				return fmt.Errorf("System V message queue %d (key %#x): %w", p.ID, uint32(p.Key), err)
			}
			rec.Msg = append(rec.Msg, q)
		}
		if rows, err = sysvRows("sem"); err != nil {
			return err
		}
		for _, row := range rows {
			p, err := sysvPerm("sem", row, 4)
			if err != nil {
				return err
			}
			n, err := strconv.Atoi(row[3])
			if err != nil || n <= 0 {
				return fmt.Errorf("/proc/sysvipc/sem: row %q: bad nsems", row)
			}
			s := image.SysvSem{IPCPerm: p, Values: make([]uint16, n)}
			if _, err := ipcCallPtr(unix.SYS_SEMCTL, 3, unsafe.Pointer(&s.Values[0]), uintptr(p.ID), 0, semGetall); err != nil {
				return fmt.Errorf("System V semaphore set %d: GETALL: %w", p.ID, err)
			}
			rec.Sem = append(rec.Sem, s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(rec.Shm)+len(rec.Msg)+len(rec.Sem) == 0 {
		return nil
	}
	if err := image.WriteFile(d.opts.ImageDir, image.SysVIPCFile, rec); err != nil {
		return fmt.Errorf("write %s: %w", image.SysVIPCFile, err)
	}
	d.result.RecordFiles = append(d.result.RecordFiles, image.SysVIPCFile)
	d.result.PageFiles = append(d.result.PageFiles, pageFiles...)
	d.result.PageBytes += pageBytes
	return nil
}

// dumpShmContent copies the non-zero pages of a segment into its pages file.
func dumpShmContent(dir string, s *image.SysvShm) (uint64, error) {
	if s.Size == 0 {
		return 0, nil
	}
	mem, err := unix.SysvShmAttach(s.ID, 0, shmRdonly)
	if err != nil {
		return 0, fmt.Errorf("shmat: %w", err)
	}
	defer unix.SysvShmDetach(mem)
	zero := make([]byte, image.PageSize)
	var f *os.File
	var off uint64
	for a := uint64(0); a < uint64(len(mem)); a += image.PageSize {
		page := mem[a:min(a+image.PageSize, uint64(len(mem)))]
		if bytes.Equal(page, zero[:len(page)]) {
			continue
		}
		if f == nil {
			s.PagesFile = image.SysvShmPagesFile(s.ID)
			if f, err = os.OpenFile(filepath.Join(dir, s.PagesFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				return 0, err
			}
			defer f.Close()
		}
		if _, err := f.Write(page); err != nil {
			return 0, err
		}
		if n := len(s.Runs); n > 0 && s.Runs[n-1].Addr+s.Runs[n-1].Len == a {
			s.Runs[n-1].Len += uint64(len(page))
		} else {
			s.Runs = append(s.Runs, image.PageRun{Addr: a, Len: uint64(len(page)), Off: off})
		}
		off += uint64(len(page))
	}
	if f != nil {
		return off, f.Close()
	}
	return 0, nil
}

// msqid64_ds offsets (x86_64).
const (
	msqQbytesOff = 88
	msqDsSize    = 120
	permUidOff   = 4
	permGidOff   = 8
	permModeOff  = 20
	ipcDsSize    = 256 // larger than any *id64_ds
)

// dumpMsq reads the messages of a queue without taking them (MSG_COPY).
func dumpMsq(q *image.SysvMsq) error {
	ds := make([]byte, ipcDsSize)
	if _, err := ipcCallPtr(unix.SYS_MSGCTL, 2, unsafe.Pointer(&ds[0]), uintptr(q.ID), ipcStat); err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	q.QBytes = binary.LittleEndian.Uint64(ds[msqQbytesOff:])
	buf := make([]byte, 8+max(q.QBytes, 1<<16))
	for i := 0; ; i++ {
		n, err := ipcCallPtr(unix.SYS_MSGRCV, 1, unsafe.Pointer(&buf[0]), uintptr(q.ID), uintptr(len(buf)-8), uintptr(i), ipcNowait|msgCopy|msgNoerr)
		if errors.Is(err, unix.ENOMSG) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("msgrcv(MSG_COPY) of message %d: %w", i, err)
		}
		q.Messages = append(q.Messages, image.SysvMsg{Type: int64(binary.LittleEndian.Uint64(buf)), Data: append([]byte(nil), buf[8:8+n]...)})
	}
}

// restoreSysvIPC recreates the saved objects in the stub's IPC namespace.
func (r *restorer) restoreSysvIPC() error {
	rec, err := image.ReadSysVIPC(r.opts.ImageDir)
	if err != nil || rec == nil {
		return err
	}
	r.sysv = rec
	own, err := ownIPCNamespace(r.opts.Pid)
	if err != nil {
		return err
	}
	if !own {
		return fmt.Errorf("%w: the image holds System V IPC objects, and the stub (pid %d) shares the engine's IPC namespace: restore into a new IPC namespace", ErrUnsupported, r.opts.Pid)
	}
	return inIPCNamespace(r.opts.Pid, func() error {
		for i := range rec.Shm {
			if err := r.createShm(&rec.Shm[i]); err != nil {
				return fmt.Errorf("System V shared memory segment %d (key %#x): %w", rec.Shm[i].ID, uint32(rec.Shm[i].Key), err)
			}
		}
		for i := range rec.Msg {
			if err := createMsq(&rec.Msg[i]); err != nil {
				return fmt.Errorf("System V message queue %d (key %#x): %w", rec.Msg[i].ID, uint32(rec.Msg[i].Key), err)
			}
		}
		for i := range rec.Sem {
			if err := createSem(&rec.Sem[i]); err != nil {
				return fmt.Errorf("System V semaphore set %d (key %#x): %w", rec.Sem[i].ID, uint32(rec.Sem[i].Key), err)
			}
		}
		return nil
	})
}

// setNextID makes the next object of kind ("shm", "msg", "sem") get id.
func setNextID(kind string, id int) error {
	if err := os.WriteFile("/proc/sys/kernel/"+kind+"_next_id", []byte(strconv.Itoa(id)), 0); err != nil {
		return fmt.Errorf("set %s_next_id: %w", kind, err)
	}
	return nil
}

func checkID(got uintptr, want int) error {
	if int(got) != want {
		return fmt.Errorf("created with id %d, want %d", got, want)
	}
	return nil
}

// setPerm sets owner and mode with IPC_STAT + IPC_SET (ds is filled by
// IPC_STAT; edit may change more fields before IPC_SET).
func setPerm(nr uintptr, id int, p image.IPCPerm, edit func(ds []byte)) error {
	ds := make([]byte, ipcDsSize)
	call := func(cmd uintptr) (uintptr, error) {
		if nr == unix.SYS_SEMCTL {
			return ipcCallPtr(nr, 3, unsafe.Pointer(&ds[0]), uintptr(id), 0, cmd)
		}
		return ipcCallPtr(nr, 2, unsafe.Pointer(&ds[0]), uintptr(id), cmd)
	}
	if _, err := call(ipcStat); err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	le := binary.LittleEndian
	le.PutUint32(ds[permUidOff:], p.Uid)
	le.PutUint32(ds[permGidOff:], p.Gid)
	le.PutUint32(ds[permModeOff:], p.Mode&0o777)
	if edit != nil {
		edit(ds)
	}
	if _, err := call(ipcSet); err != nil {
		return fmt.Errorf("IPC_SET owner %d:%d mode %#o: %w", p.Uid, p.Gid, p.Mode&0o777, err)
	}
	return nil
}

func (r *restorer) createShm(s *image.SysvShm) error {
	if err := setNextID("shm", s.ID); err != nil {
		return err
	}
	id, err := ipcCall(unix.SYS_SHMGET, uintptr(s.Key), uintptr(s.Size), uintptr(ipcCreat|ipcExcl|s.Mode&0o777))
	if err != nil {
		return fmt.Errorf("shmget: %w", err)
	}
	if err := checkID(id, s.ID); err != nil {
		return err
	}
	if len(s.Runs) > 0 {
		data, err := r.openImageFile(s.PagesFile)
		if err != nil {
			return err
		}
		defer data.Close()
		mem, err := unix.SysvShmAttach(s.ID, 0, 0)
		if err != nil {
			return fmt.Errorf("shmat: %w", err)
		}
		defer unix.SysvShmDetach(mem)
		for _, run := range s.Runs {
			if run.Addr+run.Len > uint64(len(mem)) {
				return fmt.Errorf("content run %#x+%#x beyond the segment size %d", run.Addr, run.Len, len(mem))
			}
			if _, err := data.ReadAt(mem[run.Addr:run.Addr+run.Len], int64(run.Off)); err != nil {
				return fmt.Errorf("read %s: %w", s.PagesFile, err)
			}
		}
	}
	if s.Mode&shmLocked != 0 {
		if _, err := ipcCall(unix.SYS_SHMCTL, uintptr(s.ID), shmLock, 0); err != nil {
			return fmt.Errorf("SHM_LOCK: %w", err)
		}
	}
	return setPerm(unix.SYS_SHMCTL, s.ID, s.IPCPerm, nil)
}

func createMsq(q *image.SysvMsq) error {
	if err := setNextID("msg", q.ID); err != nil {
		return err
	}
	id, err := ipcCall(unix.SYS_MSGGET, uintptr(q.Key), uintptr(ipcCreat|ipcExcl|q.Mode&0o777))
	if err != nil {
		return fmt.Errorf("msgget: %w", err)
	}
	if err := checkID(id, q.ID); err != nil {
		return err
	}
	// The queue size first, so that the messages fit (raising it above
	// msgmnb needs CAP_SYS_RESOURCE).
	if err := setPerm(unix.SYS_MSGCTL, q.ID, q.IPCPerm, func(ds []byte) { binary.LittleEndian.PutUint64(ds[msqQbytesOff:], q.QBytes) }); err != nil {
		return err
	}
	for i, m := range q.Messages {
		buf := make([]byte, 8+len(m.Data))
		binary.LittleEndian.PutUint64(buf, uint64(m.Type))
		copy(buf[8:], m.Data)
		if _, err := ipcCallPtr(unix.SYS_MSGSND, 1, unsafe.Pointer(&buf[0]), uintptr(q.ID), uintptr(len(m.Data)), ipcNowait); err != nil {
			return fmt.Errorf("msgsnd of message %d (%d bytes): %w", i, len(m.Data), err)
		}
	}
	return nil
}

func createSem(s *image.SysvSem) error {
	if err := setNextID("sem", s.ID); err != nil {
		return err
	}
	id, err := ipcCall(unix.SYS_SEMGET, uintptr(s.Key), uintptr(len(s.Values)), uintptr(ipcCreat|ipcExcl|s.Mode&0o777))
	if err != nil {
		return fmt.Errorf("semget: %w", err)
	}
	if err := checkID(id, s.ID); err != nil {
		return err
	}
	if _, err := ipcCallPtr(unix.SYS_SEMCTL, 3, unsafe.Pointer(&s.Values[0]), uintptr(s.ID), 0, semSetall); err != nil {
		return fmt.Errorf("SETALL: %w", err)
	}
	return setPerm(unix.SYS_SEMCTL, s.ID, s.IPCPerm, nil)
}

// attachSysvShm attaches a segment again from inside the task, at the
// address of the saved attachment (the mapping's start minus its offset in
// the segment), once per attachment, and gives each mapping its protection.
func (r *restorer) attachSysvShm(rt *rtask, v *image.Vma, prot uint64) error {
	t := rt.lead()
	base := v.Start - v.Offset
	if rt.sysvAttached == nil {
		rt.sysvAttached = map[uint64]bool{}
	}
	if !rt.sysvAttached[base] {
		flags := uint64(0)
		if v.Prot&image.ProtWrite == 0 {
			flags |= shmRdonly
		}
		if v.Prot&image.ProtExec != 0 {
			flags |= shmExec
		}
		got, err := t.sys("shmat", unix.SYS_SHMAT, v.ShmemID, base, flags)
		if err != nil {
			return fmt.Errorf("attach System V segment %d: %w", v.ShmemID, err)
		}
		if got != base {
			return fmt.Errorf("System V segment %d attached at %#x, want %#x", v.ShmemID, got, base)
		}
		rt.sysvAttached[base] = true
	}
	_, err := t.sys("mprotect", unix.SYS_MPROTECT, v.Start, v.End-v.Start, prot)
	return err
}

// destroySysvShm removes again the segments that were marked for
// destruction, now that their attachments are back.
func (r *restorer) destroySysvShm() error {
	if r.sysv == nil {
		return nil
	}
	return inIPCNamespace(r.opts.Pid, func() error {
		for _, s := range r.sysv.Shm {
			if s.Mode&shmDest == 0 {
				continue
			}
			if _, err := ipcCall(unix.SYS_SHMCTL, uintptr(s.ID), ipcRmid, 0); err != nil {
				return fmt.Errorf("System V shared memory segment %d: IPC_RMID: %w", s.ID, err)
			}
		}
		return nil
	})
}
