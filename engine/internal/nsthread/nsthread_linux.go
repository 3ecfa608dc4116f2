// Package nsthread runs a function on an OS thread that joined a namespace
// of another process.
package nsthread

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Run runs f on an OS thread that joined the namespace ns ("net", "ipc", ...,
// of setns type flag) of pid, and takes the thread back to its own namespace
// afterwards. The thread is never simply thrown away (a locked goroutine
// that exits ends its thread): a process started from that thread with a
// parent-death signal (Go's SysProcAttr.Pdeathsig) would receive it. Only
// when going back fails is the thread left to end, locked.
func Run(pid int, ns string, flag int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := unix.Open("/proc/thread-self/ns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own %s namespace: %w", ns, err)
			return
		}
		defer unix.Close(back)
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open %s namespace of %d: %w", ns, pid, err)
			return
		}
		err = unix.Setns(fd, flag)
		unix.Close(fd)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("join %s namespace of %d: %w", ns, pid, err)
			return
		}
		ferr := f()
		if err := unix.Setns(back, flag); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to own %s namespace: %w", ns, err))
			return // still locked: the runtime ends this thread
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
