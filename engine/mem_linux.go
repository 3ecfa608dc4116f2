package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
)

// PAGEMAP_SCAN (linux/fs.h), absent from x/sys.
const (
	pagemapScan     = 0xC0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pageIsFile      = 1 << 2
	pageIsPresent   = 1 << 3
	pageIsSwapped   = 1 << 4
	pageIsPfnzero   = 1 << 5
	pageRegionBatch = 4096
)

type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages uint64
	CategoryInverted, CategoryMask, CategoryAnyofMask       uint64
	ReturnMask                                              uint64
}

type pageRegion struct {
	Start, End, Categories uint64
}

// presentPages returns the regions of [start, end) of pid's address space that
// hold present or swapped pages, with their categories (PAGE_IS_*). It uses
// the PAGEMAP_SCAN ioctl (1 GiB scanned in ~1.4 ms, KERNEL.md) and falls back
// to reading /proc/PID/pagemap entries on kernels without it.
func presentPages(pid int, start, end uint64) ([]pageRegion, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/pagemap")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []pageRegion
	vec := make([]pageRegion, pageRegionBatch)
	for start < end {
		arg := pmScanArg{
			Size:              uint64(unsafe.Sizeof(pmScanArg{})),
			Start:             start,
			End:               end,
			Vec:               uint64(uintptr(unsafe.Pointer(&vec[0]))),
			VecLen:            uint64(len(vec)),
			CategoryAnyofMask: pageIsPresent | pageIsSwapped,
			ReturnMask:        pageIsPresent | pageIsSwapped | pageIsFile | pageIsPfnzero | pageIsWritten,
		}
		n, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		if e == unix.ENOTTY || e == unix.EINVAL && out == nil {
			return pagemapEntries(f, start, end)
		}
		if e != 0 {
			return nil, fmt.Errorf("PAGEMAP_SCAN of pid %d: %w", pid, e)
		}
		out = append(out, vec[:n]...)
		// walk_end is unreliable (KERNEL.md): resume only when the vector was full.
		if int(n) < len(vec) {
			break
		}
		start = vec[n-1].End
	}
	return out, nil
}

// pagemapEntries is the slow path of presentPages: one 64-bit entry per page.
func pagemapEntries(f *os.File, start, end uint64) ([]pageRegion, error) {
	const present, swapped, file = 1 << 63, 1 << 62, 1 << 61
	var out []pageRegion
	buf := make([]byte, 8*4096)
	for addr := start; addr < end; {
		n := (end - addr) / image.PageSize
		if n > 4096 {
			n = 4096
		}
		k, err := f.ReadAt(buf[:8*n], int64(addr/image.PageSize*8))
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read pagemap: %w", err)
		}
		for i := 0; i < k/8; i++ {
			e := *(*uint64)(unsafe.Pointer(&buf[8*i]))
			// No write-protect information here: every page counts as written.
			cat := uint64(pageIsWritten)
			if e&present != 0 {
				cat |= pageIsPresent
			}
			if e&swapped != 0 {
				cat |= pageIsSwapped
			}
			if e&file != 0 {
				cat |= pageIsFile
			}
			if cat == pageIsWritten {
				continue
			}
			a := addr + uint64(i)*image.PageSize
			if l := len(out); l > 0 && out[l-1].End == a && out[l-1].Categories == cat {
				out[l-1].End += image.PageSize
			} else {
				out = append(out, pageRegion{a, a + image.PageSize, cat})
			}
		}
		if k < int(8*n) {
			break
		}
		addr += n * image.PageSize
	}
	return out, nil
}
