package oci

import (
	"fmt"
	"syscall"
	"time"
	"unsafe"
)

// Linux clock ids (include/uapi/linux/time.h).
const (
	clockMonotonic = 1
	clockBoottime  = 7
)

// ReadClocks reads the wall, monotonic and boot-time clocks, one after the
// other, for Config.Time.
func ReadClocks() (Clocks, error) {
	mono, err := clockGettime(clockMonotonic)
	if err != nil {
		return Clocks{}, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	boot, err := clockGettime(clockBoottime)
	if err != nil {
		return Clocks{}, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	return Clocks{Realtime: time.Now().UTC(), Monotonic: mono, Boottime: boot}, nil
}

func clockGettime(id int) (int64, error) {
	var ts syscall.Timespec
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, uintptr(id), uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0, e
	}
	return ts.Nano(), nil
}
