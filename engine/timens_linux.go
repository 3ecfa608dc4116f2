package engine

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine/image"
)

// TimeOffsets are the offsets of a time namespace (timens_offsets).
type TimeOffsets struct {
	Monotonic time.Duration
	Boottime  time.Duration
}

// readTimensOffsets reads /proc/PID/timens_offsets (the offsets of the time
// namespace of pid's children, which is its own unless it unshared one).
func readTimensOffsets(pid int) (TimeOffsets, error) {
	var o TimeOffsets
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", pid))
	if err != nil {
		return o, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		sec, err1 := strconv.ParseInt(f[1], 10, 64)
		nsec, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return o, fmt.Errorf("timens_offsets line %q", l)
		}
		d := time.Duration(sec)*time.Second + time.Duration(nsec)
		switch f[0] {
		case "monotonic", "1":
			o.Monotonic = d
		case "boottime", "7":
			o.Boottime = d
		}
	}
	return o, nil
}

func clockNs(id int32) int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(id, &ts)
	return ts.Nano()
}

// treeClocks returns CLOCK_MONOTONIC and CLOCK_BOOTTIME as the task pid sees them.
func treeClocks(pid int) (mono, boot int64) {
	off, err := readTimensOffsets(pid)
	if err != nil {
		off = TimeOffsets{}
	}
	return clockNs(unix.CLOCK_MONOTONIC) + int64(off.Monotonic), clockNs(unix.CLOCK_BOOTTIME) + int64(off.Boottime)
}

// RestoreTimeOffsets returns the time-namespace offsets under which the tree
// saved in imageDir sees CLOCK_MONOTONIC and CLOCK_BOOTTIME continue from the
// values they had when it was dumped, as if no time had passed.
//
// The runtime uses them when it starts the stub: unshare(CLONE_NEWTIME),
// write them to /proc/self/timens_offsets (see WriteTimeOffsets), then
// execve the stub, which enters the new time namespace on exec. (clone with
// CLONE_NEWTIME would not do: the child enters the namespace at once and its
// offsets can no longer be set.) Compute them right before starting the stub.
func RestoreTimeOffsets(imageDir string) (TimeOffsets, error) {
	inv, err := image.ReadInventory(imageDir)
	if err != nil {
		return TimeOffsets{}, err
	}
	if inv.Monotonic == 0 {
		return TimeOffsets{}, fmt.Errorf("%w: the image holds no clock values", ErrUnsupported)
	}
	return TimeOffsets{
		Monotonic: time.Duration(inv.Monotonic - clockNs(unix.CLOCK_MONOTONIC)),
		Boottime:  time.Duration(inv.Boottime - clockNs(unix.CLOCK_BOOTTIME)),
	}, nil
}

// WriteTimeOffsets writes o to /proc/PID/timens_offsets (one write() per
// clock, KERNEL.md: pwrite is refused). pid must have unshared a time
// namespace that no process has entered yet.
func WriteTimeOffsets(pid int, o TimeOffsets) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/timens_offsets", pid), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, c := range []struct {
		id int
		d  time.Duration
	}{{unix.CLOCK_MONOTONIC, o.Monotonic}, {unix.CLOCK_BOOTTIME, o.Boottime}} {
		sec, nsec := int64(c.d/time.Second), int64(c.d%time.Second)
		if nsec < 0 {
			sec, nsec = sec-1, nsec+int64(time.Second)
		}
		if _, err := f.Write([]byte(fmt.Sprintf("%d %d %d", c.id, sec, nsec))); err != nil {
			return fmt.Errorf("write time namespace offsets: %w", err)
		}
	}
	return nil
}
