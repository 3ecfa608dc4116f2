package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/core/mount"
	ctrdruntime "github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/runtime"
)

// rootFile in the bundle names the runtime root of the container, for the "delete" process.
const rootFile = "cryo-root"

// container is one container of the shim: the runtime's container plus its processes.
type container struct {
	s      *service
	id     string
	bundle string
	rt     *runtime.Runtime
	init   *process

	// restoreFrom is the image to restore from at Start (Create with a checkpoint).
	restoreFrom string
	createOpts  runtime.CreateOpts

	mu    sync.Mutex
	rc    *runtime.Container // nil until created (or restored)
	execs map[string]*process
}

// runtimeRoot picks the runtime's state root: the runc option Root (per namespace, as runc
// does) when containerd passes one, else a directory inside the bundle, so each daemon's
// containers stay private to it and vanish with the bundle.
func runtimeRoot(r *taskAPI.CreateTaskRequest, ns string) (string, error) {
	// `ctr c restore` of a container that had no runtime options sends an empty Any: no
	// options, as for runc's shim.
	if r.Options.GetValue() != nil {
		v, err := typeurl.UnmarshalAny(r.Options)
		if err != nil {
			return "", fmt.Errorf("runtime options: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		o, ok := v.(*options.Options)
		if !ok {
			return "", fmt.Errorf("runtime options of type %T: %w", v, errdefs.ErrInvalidArgument)
		}
		if o.BinaryName != "" || o.CriuImagePath != "" || o.SystemdCgroup {
			return "", fmt.Errorf("runc options binary_name, criu_image_path and systemd_cgroup have no meaning for cryo: %w", errdefs.ErrNotImplemented)
		}
		if o.Root != "" {
			return filepath.Join(o.Root, ns), nil
		}
	}
	return filepath.Join(r.Bundle, "cryo"), nil
}

func createContainer(ctx context.Context, s *service, r *taskAPI.CreateTaskRequest) (_ *container, retErr error) {
	root, err := runtimeRoot(r, s.ns)
	if err != nil {
		return nil, err
	}
	rt, err := runtime.New(root)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(r.Bundle, rootFile), []byte(root)); err != nil {
		return nil, err
	}
	rootfs := filepath.Join(r.Bundle, "rootfs")
	if len(r.Rootfs) > 0 {
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, err
		}
		ms := make([]mount.Mount, 0, len(r.Rootfs))
		for _, m := range r.Rootfs {
			ms = append(ms, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
		}
		if err := mount.All(ms, rootfs); err != nil {
			return nil, fmt.Errorf("mount rootfs: %w", err)
		}
		defer func() {
			if retErr != nil {
				unmountRootfs(ctx, r.Bundle)
			}
		}()
	}
	c := &container{s: s, id: r.ID, bundle: r.Bundle, rt: rt, restoreFrom: r.Checkpoint, execs: map[string]*process{}}
	stdio := stdioConfig{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	c.init = newProcess(c, "", stdio, nil)
	c.init.io, err = newProcIO(ctx, r.ID, s.ns, stdio)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			c.init.io.Close()
		}
	}()
	c.createOpts = runtime.CreateOpts{
		Bundle: r.Bundle,
		Stdin:  c.init.io.proc.Stdin, Stdout: c.init.io.proc.Stdout, Stderr: c.init.io.proc.Stderr,
	}
	if r.Checkpoint != "" {
		// Restored at Start; until then the task exists without a process, like runc's.
		return c, nil
	}
	rc, err := c.runInit(ctx, func(opts runtime.CreateOpts) (*runtime.Container, error) {
		return rt.Create(ctx, r.ID, opts)
	})
	if err != nil {
		return nil, err
	}
	c.rc = rc
	return c, nil
}

// runInit creates (or restores) the runtime container with the init's stdio, then watches
// the init's exit and the cgroup's OOM kills.
func (c *container) runInit(ctx context.Context, create func(runtime.CreateOpts) (*runtime.Container, error)) (*runtime.Container, error) {
	opts := c.createOpts
	var master chan *os.File
	if c.init.stdio.Terminal {
		cs, cleanup, err := consoleSocket()
		if err != nil {
			return nil, err
		}
		defer cleanup()
		opts.ConsoleSocket = cs.Path()
		master = make(chan *os.File, 1)
		go func() {
			m, err := cs.ReceiveMaster()
			if err != nil {
				m = nil
			}
			master <- m
		}()
	}
	rc, err := create(opts)
	if err != nil {
		return nil, err
	}
	if master != nil {
		m := <-master
		if m == nil {
			rc.Delete(ctx, true)
			return nil, fmt.Errorf("container %s: no pty master from the init", c.id)
		}
		if err := c.init.io.attachConsole(ctx, m); err != nil {
			rc.Delete(ctx, true)
			return nil, err
		}
	}
	c.init.io.started()
	pid := rc.Pid()
	if err := writeInitPid(c.bundle, pid); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("record init pid")
	}
	c.init.mu.Lock()
	c.init.pid = pid
	c.init.mu.Unlock()
	go c.waitInit(rc)
	c.watchOOM(rc)
	return rc, nil
}

// waitInit waits for the init (the runtime's child, so it is its exit status and nobody else
// reaps it), stops what is left of the container, waits for the exec processes' exits to be
// published, then publishes the init's.
func (c *container) waitInit(rc *runtime.Container) {
	status, err := rc.Wait()
	ctx := c.s.ctx
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("wait for init")
	}
	// Without a PID namespace of its own the init's children survive it; runc's shim kills
	// them too.
	if cg, err := rc.Cgroup(); err == nil {
		cg.Kill(syscall.SIGKILL)
	}
	c.mu.Lock()
	execs := make([]*process, 0, len(c.execs))
	for _, p := range c.execs {
		execs = append(execs, p)
	}
	c.mu.Unlock()
	for _, p := range execs {
		if st, _, _, _ := p.snapshot(); st == procRunning {
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
			}
		}
	}
	c.init.exited(status)
	_, pid, code, at := c.init.snapshot()
	if err := writeExit(c.bundle, exitRecord{Pid: pid, Status: int(code), At: at}); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("record exit status")
	}
	c.s.send(ctrdruntime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: c.id, ID: c.id, Pid: uint32(pid), ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at),
	})
}

// watchOOM publishes an OOM event for each OOM kill in the container's cgroup.
func (c *container) watchOOM(rc *runtime.Container) {
	cg, err := rc.Cgroup()
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(c.s.ctx)
	ch, err := cg.OOMEvents(ctx)
	if err != nil {
		cancel()
		log.G(c.s.ctx).WithError(err).WithField("id", c.id).Warn("no oom notifications")
		return
	}
	go func() {
		defer cancel()
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
				c.s.send(ctrdruntime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: c.id})
			case <-c.init.done:
				return
			}
		}
	}()
}

func (c *container) process(execID string) (*process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("process %s of %s: %w", execID, c.id, errdefs.ErrNotFound)
	}
	return p, nil
}

// running returns the runtime container of a task that has a process.
func (c *container) running() (*runtime.Container, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rc == nil {
		return nil, fmt.Errorf("container %s is not started: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	return c.rc, nil
}

func (c *container) start(ctx context.Context) error {
	if st, _, _, _ := c.init.snapshot(); st != procCreated {
		return fmt.Errorf("container %s already started: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	if c.restoreFrom != "" {
		rc, err := c.runInit(ctx, func(opts runtime.CreateOpts) (*runtime.Container, error) {
			return c.rt.Restore(ctx, c.id, runtime.RestoreOpts{CreateOpts: opts, ImagePath: c.restoreFrom})
		})
		if err != nil {
			return fmt.Errorf("restore %s from %s: %w", c.id, c.restoreFrom, err)
		}
		c.mu.Lock()
		c.rc = rc
		c.mu.Unlock()
		c.init.setRunning(rc.Pid())
		return nil
	}
	rc, err := c.running()
	if err != nil {
		return err
	}
	if err := rc.Start(ctx); err != nil {
		return err
	}
	c.init.setRunning(rc.Pid())
	return nil
}

func (c *container) addExec(id string, spec *specs.Process, stdio stdioConfig) error {
	if id == "" {
		return fmt.Errorf("exec id is empty: %w", errdefs.ErrInvalidArgument)
	}
	if st, _, _, _ := c.init.snapshot(); st == procStopped {
		return fmt.Errorf("container %s has stopped: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[id]; ok {
		return fmt.Errorf("exec %s in %s: %w", id, c.id, errdefs.ErrAlreadyExists)
	}
	spec.Terminal = stdio.Terminal
	c.execs[id] = newProcess(c, id, stdio, spec)
	return nil
}

func (c *container) startExec(ctx context.Context, p *process) (retErr error) {
	if st, _, _, _ := p.snapshot(); st != procCreated {
		return fmt.Errorf("exec %s already started: %w", p.id, errdefs.ErrFailedPrecondition)
	}
	rc, err := c.running()
	if err != nil {
		return err
	}
	p.io, err = newProcIO(ctx, c.id, c.s.ns, p.stdio)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			p.io.Close()
		}
	}()
	opts := runtime.ExecOpts{Process: p.spec, Stdin: p.io.proc.Stdin, Stdout: p.io.proc.Stdout, Stderr: p.io.proc.Stderr}
	var master chan *os.File
	if p.stdio.Terminal {
		cs, cleanup, err := consoleSocket()
		if err != nil {
			return err
		}
		defer cleanup()
		opts.ConsoleSocket = cs.Path()
		master = make(chan *os.File, 1)
		go func() {
			m, err := cs.ReceiveMaster()
			if err != nil {
				m = nil
			}
			master <- m
		}()
	}
	proc, err := rc.Exec(ctx, opts)
	if err != nil {
		return err
	}
	if master != nil {
		m := <-master
		if m == nil {
			proc.Signal(syscall.SIGKILL)
			proc.Wait()
			return fmt.Errorf("exec %s: no pty master", p.id)
		}
		if err := p.io.attachConsole(ctx, m); err != nil {
			proc.Signal(syscall.SIGKILL)
			proc.Wait()
			return err
		}
	}
	p.io.started()
	p.mu.Lock()
	p.exec = proc
	p.mu.Unlock()
	p.setRunning(proc.Pid)
	go func() {
		status, err := proc.Wait()
		if err != nil {
			log.G(c.s.ctx).WithError(err).WithField("exec_id", p.id).Warn("wait for exec process")
		}
		p.exited(status)
		_, pid, code, at := p.snapshot()
		c.s.send(ctrdruntime.TaskExitEventTopic, &eventstypes.TaskExit{
			ContainerID: c.id, ID: p.id, Pid: uint32(pid), ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at),
		})
	}()
	return nil
}

func (c *container) kill(p *process, sig syscall.Signal, all bool) error {
	st, _, _, _ := p.snapshot()
	if st == procStopped {
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	}
	if p.id != "" {
		if st != procRunning {
			return fmt.Errorf("exec %s is not started: %w", p.id, errdefs.ErrFailedPrecondition)
		}
		if err := p.exec.Signal(sig); err != nil {
			if errors.Is(err, os.ErrProcessDone) {
				return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
			}
			return err
		}
		return nil
	}
	rc, err := c.running()
	if err != nil {
		return err
	}
	if err := rc.Kill(sig, all); err != nil {
		if errors.Is(err, runtime.ErrNotRunning) {
			return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
		}
		return err
	}
	return nil
}

func (c *container) deleteExec(p *process) error {
	if st, _, _, _ := p.snapshot(); st == procRunning {
		return fmt.Errorf("exec %s is still running: %w", p.id, errdefs.ErrFailedPrecondition)
	}
	c.mu.Lock()
	delete(c.execs, p.id)
	c.mu.Unlock()
	if p.io != nil {
		p.io.Close()
	}
	return nil
}

// delete removes the container once its init has exited; a created container's init is
// killed first (as containerd expects of a never-started task).
func (c *container) delete(ctx context.Context) error {
	st, _, _, _ := c.init.snapshot()
	rc := c.rc
	if st == procRunning {
		return fmt.Errorf("container %s is running: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	if rc != nil {
		if err := rc.Delete(ctx, st == procCreated); err != nil && !errors.Is(err, runtime.ErrNotExist) {
			return err
		}
		if st == procCreated {
			select {
			case <-c.init.done:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("init of %s did not exit after SIGKILL", c.id)
			}
		}
	} else {
		c.init.exited(0) // a checkpoint never restored: no process ever ran
	}
	c.init.io.Close()
	unmountRootfs(ctx, c.bundle)
	return nil
}

// execPids maps the PIDs of running exec processes to their exec ids.
func (c *container) execPids() map[int]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[int]string{}
	for id, p := range c.execs {
		if st, pid, _, _ := p.snapshot(); st == procRunning {
			m[pid] = id
		}
	}
	return m
}

func (c *container) checkpoint(ctx context.Context, opts runtime.CheckpointOpts) error {
	rc, err := c.running()
	if err != nil {
		return err
	}
	opts.Name = c.id
	if _, err := rc.Checkpoint(ctx, opts); err != nil {
		return fmt.Errorf("checkpoint %s: %w", c.id, err)
	}
	return nil
}

// forceDelete removes what the runtime still holds for container id of bundle (the "delete"
// action, after the shim is gone).
func forceDelete(ctx context.Context, bundle, id string) error {
	root, err := os.ReadFile(filepath.Join(bundle, rootFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil // never created
	}
	if err != nil {
		return err
	}
	rt, err := runtime.New(strings.TrimSpace(string(root)))
	if err != nil {
		return err
	}
	rc, err := rt.Load(id)
	if errors.Is(err, runtime.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return rc.Delete(ctx, true)
}
