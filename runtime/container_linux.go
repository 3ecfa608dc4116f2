package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/runtime/cgroups"
)

// Container is one container under a Runtime's root.
type Container struct {
	rt  *Runtime
	dir string
	rec record
	cmd *exec.Cmd // the init, when this process created it
	// waitOnce makes Wait safe for several callers (the shim's exit watcher
	// and a checkpoint's delete); waitCode and waitErr are its result.
	waitOnce sync.Once
	waitCode int
	waitErr  error
	cg       cgroups.Manager
}

// ID is the container id.
func (c *Container) ID() string { return c.rec.ID }

// Pid is the init's host pid (0 before it exists).
func (c *Container) Pid() int { return c.rec.Pid }

// Bundle is the absolute bundle path.
func (c *Container) Bundle() string { return c.rec.Bundle }

// Rootfs is the absolute rootfs path on the host.
func (c *Container) Rootfs() string { return c.rec.Rootfs }

// Spec is the container's OCI spec (with resources as last updated).
func (c *Container) Spec() *specs.Spec { return c.rec.Spec }

// StateDir is the container's directory under the runtime root.
func (c *Container) StateDir() string { return c.dir }

// Cgroup returns the container's cgroup manager (its Freeze/Thaw make it an
// engine.Freezer).
func (c *Container) Cgroup() (cgroups.Manager, error) {
	if c.cg == nil {
		cg, err := cgroups.Load(c.rec.CgroupPath)
		if err != nil {
			return nil, fmt.Errorf("cgroup of %s: %w", c.rec.ID, err)
		}
		c.cg = cg
	}
	return c.cg, nil
}

func (c *Container) save() error {
	data, err := json.Marshal(&c.rec)
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.dir, "."+stateFile)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write state of %s: %w", c.rec.ID, err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, stateFile)); err != nil {
		return fmt.Errorf("write state of %s: %w", c.rec.ID, err)
	}
	return nil
}

// lock serialises state-changing operations on the container across
// processes (flock on its state dir).
func (c *Container) lock() (func(), error) {
	fd, err := unix.Open(c.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("container %s: %w", c.rec.ID, ErrNotExist)
		}
		return nil, err
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Reload: another process may have changed the state meanwhile.
	if data, err := os.ReadFile(filepath.Join(c.dir, stateFile)); err == nil {
		var rec record
		if json.Unmarshal(data, &rec) == nil {
			c.rec = rec
		}
	} else if errors.Is(err, unix.ENOENT) {
		unix.Close(fd)
		return nil, fmt.Errorf("container %s: %w", c.rec.ID, ErrNotExist)
	}
	return func() { unix.Close(fd) }, nil
}

func (c *Container) initAlive() bool {
	if c.rec.Pid == 0 {
		return false
	}
	st, err := procStartTime(c.rec.Pid)
	return err == nil && st == c.rec.PidStartTime
}

// Status reports the container's current state.
func (c *Container) Status() (Status, error) {
	if c.rec.Pid == 0 {
		return c.rec.Status, nil
	}
	if !c.initAlive() {
		return Stopped, nil
	}
	if c.rec.Status == Created || c.rec.Status == Creating {
		return c.rec.Status, nil
	}
	cg, err := c.Cgroup()
	if err != nil {
		return "", err
	}
	frozen, err := cgroupFrozen(cg)
	if err != nil {
		if !c.initAlive() {
			return Stopped, nil
		}
		return "", fmt.Errorf("freezer state of %s: %w", c.rec.ID, err)
	}
	if frozen {
		return Paused, nil
	}
	return Running, nil
}

// State is the OCI state of the container.
func (c *Container) State() (*State, error) {
	st, err := c.Status()
	if err != nil {
		return nil, err
	}
	s := &State{
		State: specs.State{
			Version: specs.Version, ID: c.rec.ID, Status: specs.ContainerState(st), Bundle: c.rec.Bundle,
		},
		Rootfs: c.rec.Rootfs, Created: c.rec.Created, Owner: "",
	}
	if c.rec.Spec != nil {
		s.Annotations = c.rec.Spec.Annotations
	}
	if st != Stopped {
		s.Pid = c.rec.Pid
	}
	return s, nil
}

func (c *Container) hookState(st Status) *specs.State {
	s := &specs.State{Version: specs.Version, ID: c.rec.ID, Status: specs.ContainerState(st), Bundle: c.rec.Bundle}
	if st != Stopped {
		s.Pid = c.rec.Pid
	}
	if c.rec.Spec != nil {
		s.Annotations = c.rec.Spec.Annotations
	}
	return s
}

// Start runs the user process of a created container: the init runs the
// startContainer hooks and execs process.args; Start returns once the exec
// happened (or with the init's error), then runs the poststart hooks.
func (c *Container) Start(ctx context.Context) error {
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := c.Status()
	if err != nil {
		return err
	}
	switch st {
	case Created:
	case Stopped:
		return ErrStopped
	case Creating:
		return fmt.Errorf("container %s is still being created: %w", c.rec.ID, ErrNotRunning)
	default:
		return ErrAlreadyStarted
	}
	conn, err := dialInit(c.dir)
	if err != nil {
		return fmt.Errorf("reach init of %s: %w", c.rec.ID, err)
	}
	defer conn.Close()
	if err := sendToInit(conn, syncMsg{Type: msgStart}); err != nil {
		return fmt.Errorf("signal init of %s: %w", c.rec.ID, err)
	}
	if err := waitExec(json.NewDecoder(conn)); err != nil {
		return fmt.Errorf("start container %s: %w", c.rec.ID, err)
	}
	c.rec.Status = Running
	if err := c.save(); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(c.dir, initSocket))
	if s := c.rec.Spec; s.Hooks != nil && len(s.Hooks.Poststart) > 0 {
		if err := runHooks(ctx, "poststart", s.Hooks.Poststart, c.hookState(Running)); err != nil {
			log.G(ctx).WithError(err).WithField("id", c.rec.ID).Warn("poststart hook")
		}
	}
	return nil
}

// Kill sends sig to the init, or with all to every process of the container.
func (c *Container) Kill(sig syscall.Signal, all bool) error {
	st, err := c.Status()
	if err != nil {
		return err
	}
	if st == Stopped || (st == Creating && c.rec.Pid == 0) {
		return ErrNotRunning
	}
	if !all {
		if err := unix.Kill(c.rec.Pid, sig); err != nil {
			if errors.Is(err, unix.ESRCH) {
				return ErrNotRunning
			}
			return fmt.Errorf("signal init of %s: %w", c.rec.ID, err)
		}
		return nil
	}
	return c.signalAll(sig)
}

func (c *Container) signalAll(sig syscall.Signal) error {
	cg, err := c.Cgroup()
	if err != nil {
		return err
	}
	if err := cg.Kill(sig); err != nil {
		return fmt.Errorf("signal processes of %s: %w", c.rec.ID, err)
	}
	return nil
}

// Wait waits for the init to exit and returns its exit code (128+signal when
// killed). When this process is not the init's parent (another process
// created it, or the init was forked by the nsenter constructor) the code is
// -1, unless this process is a child subreaper that adopted the init.
func (c *Container) Wait() (int, error) {
	if c.cmd != nil {
		c.waitOnce.Do(func() {
			// Wait for the exit on the pidfd before reaping: a wait would also
			// consume the ptrace stops of the init while this process's engine
			// traces it (an in-process checkpoint, as in the shim).
			if err := waitGone(c.rec.Pid, c.rec.PidStartTime, 0); err != nil {
				c.waitCode, c.waitErr = -1, err
				return
			}
			c.waitCode, c.waitErr = exitCode(c.cmd, c.cmd.Wait())
		})
		return c.waitCode, c.waitErr
	}
	if err := waitGone(c.rec.Pid, c.rec.PidStartTime, 0); err != nil {
		return -1, err
	}
	var ws unix.WaitStatus
	if wpid, err := unix.Wait4(c.rec.Pid, &ws, unix.WNOHANG|unix.WALL, nil); err != nil || wpid != c.rec.Pid {
		return -1, nil
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

func exitCode(cmd *exec.Cmd, err error) (int, error) {
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return -1, err
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return -1, errors.New("no wait status")
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// waitGone waits until pid (with that start time) has exited; timeout 0
// waits forever. The pidfd waits in Go's poller, so a wait (one per running
// container in the shim) holds no OS thread.
func waitGone(pid int, start uint64, timeout time.Duration) error {
	if pid == 0 {
		return nil
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	if st, err := procStartTime(pid); err != nil || st != start {
		return nil
	}
	if timeout > 0 {
		if err := f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return fmt.Errorf("wait for pid %d: %w", pid, err)
		}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("wait for pid %d: %w", pid, err)
	}
	var pollErr error
	err = rc.Read(func(fd uintptr) bool {
		// A pidfd is readable once its process has exited; Read waits for
		// readiness in the poller whenever this reports false.
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			pollErr = err
			return true
		}
		return n > 0
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("pid %d still alive after %v", pid, timeout)
	}
	if err == nil {
		err = pollErr
	}
	if err != nil {
		return fmt.Errorf("wait for pid %d: %w", pid, err)
	}
	return nil
}

// Delete removes the container: a stopped or created one at once, a running
// or paused one only with force (after SIGKILL to all its processes). The
// cgroup and state dir are removed, then the poststop hooks run.
func (c *Container) Delete(ctx context.Context, force bool) error {
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := c.Status()
	if err != nil {
		return err
	}
	switch st {
	case Stopped:
	case Created, Creating:
	case Running, Paused:
		if !force {
			return withMessage(ErrNotStopped, "cannot delete container %s that is not stopped: %s", c.rec.ID, st)
		}
	}
	if st != Stopped && c.rec.Pid != 0 {
		if err := unix.Kill(c.rec.Pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill init of %s: %w", c.rec.ID, err)
		}
	}
	if err := c.destroy(ctx); err != nil {
		return err
	}
	if c.rec.Spec != nil && c.rec.Spec.Hooks != nil && len(c.rec.Spec.Hooks.Poststop) > 0 {
		if err := runHooks(ctx, "poststop", c.rec.Spec.Hooks.Poststop, c.hookState(Stopped)); err != nil {
			log.G(ctx).WithError(err).WithField("id", c.rec.ID).Warn("poststop hook")
		}
	}
	return nil
}

// destroy kills whatever is left in the cgroup, waits for the init, removes
// the cgroup and the state dir.
func (c *Container) destroy(ctx context.Context) error {
	if cg, err := c.Cgroup(); err == nil {
		for i := 0; i < 100; i++ {
			pids, err := cg.Pids()
			if err != nil || len(pids) == 0 {
				break
			}
			if err := c.signalAll(unix.SIGKILL); err != nil {
				log.G(ctx).WithError(err).WithField("id", c.rec.ID).Warn("kill container processes")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	if err := waitGone(c.rec.Pid, c.rec.PidStartTime, 10*time.Second); err != nil {
		return err
	}
	if c.cmd != nil {
		_, _ = c.Wait()
	}
	if cg, err := c.Cgroup(); err == nil {
		if err := cg.Delete(); err != nil {
			return fmt.Errorf("remove cgroup of %s: %w", c.rec.ID, err)
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("remove state of %s: %w", c.rec.ID, err)
	}
	return nil
}

// Pause freezes every process of a running container.
func (c *Container) Pause() error {
	return c.setFrozen(Running, ErrNotRunning, cgroups.Manager.Freeze)
}

// Resume thaws a paused container.
func (c *Container) Resume() error {
	return c.setFrozen(Paused, ErrNotPaused, cgroups.Manager.Thaw)
}

// setFrozen applies freeze or thaw to the container's cgroup when the
// container is in state from, and returns wrong otherwise.
func (c *Container) setFrozen(from Status, wrong error, apply func(cgroups.Manager) error) error {
	st, err := c.Status()
	if err != nil {
		return err
	}
	if st != from {
		return wrong
	}
	cg, err := c.Cgroup()
	if err != nil {
		return err
	}
	return apply(cg)
}

// Processes lists the host pids of every process of the container.
func (c *Container) Processes() ([]int, error) {
	st, err := c.Status()
	if err != nil {
		return nil, err
	}
	if st == Stopped {
		return nil, nil
	}
	cg, err := c.Cgroup()
	if err != nil {
		return nil, err
	}
	return cg.Pids()
}

// Update applies new resource limits to the container's cgroup and records them.
func (c *Container) Update(r *specs.LinuxResources) error {
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := c.Status()
	if err != nil {
		return err
	}
	if st == Stopped {
		return ErrNotRunning
	}
	cg, err := c.Cgroup()
	if err != nil {
		return err
	}
	if err := cg.Set(r); err != nil {
		return fmt.Errorf("update resources of %s: %w", c.rec.ID, err)
	}
	// Record the merge: decoding r's JSON onto the current resources keeps
	// every field r leaves unset.
	cur := c.rec.Spec.Linux.Resources
	if cur == nil {
		cur = &specs.LinuxResources{}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, cur); err != nil {
		return err
	}
	c.rec.Spec.Linux.Resources = cur
	return c.save()
}

// Stats reads the cgroup statistics of the container.
func (c *Container) Stats() (*cgroups.Stats, error) {
	st, err := c.Status()
	if err != nil {
		return nil, err
	}
	if st == Stopped {
		return nil, ErrNotRunning
	}
	cg, err := c.Cgroup()
	if err != nil {
		return nil, err
	}
	return cg.Stats()
}

// OOMEvents reports OOM kills in the container's cgroup until ctx is done.
func (c *Container) OOMEvents(ctx context.Context) (<-chan struct{}, error) {
	cg, err := c.Cgroup()
	if err != nil {
		return nil, err
	}
	return cg.OOMEvents(ctx)
}
