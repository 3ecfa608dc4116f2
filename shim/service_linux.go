package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/mount"
	ctrdruntime "github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/runtime"
)

// service is the task service (containerd task API v3) of one shim process, which serves one
// container, or every container of a pod.
type service struct {
	ctx       context.Context // carries the namespace, for events
	ns        string
	publisher shim.Publisher
	sd        shutdown.Service
	events    chan event

	mu         sync.Mutex
	containers map[string]*container
}

type event struct {
	topic string
	ev    events.Event
	flush chan struct{} // closed when every event queued before it is published
}

var _ taskAPI.TTRPCTaskService = (*service)(nil)

func newService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) (*service, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	s := &service{
		ctx:        ctx,
		ns:         ns,
		publisher:  publisher,
		sd:         sd,
		events:     make(chan event, 128),
		containers: map[string]*container{},
	}
	go s.forward()
	sd.RegisterCallback(func(context.Context) error {
		close(s.events)
		return nil
	})
	return s, nil
}

// RegisterTTRPC registers the task service on the shim's ttrpc server.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// send queues an event; one goroutine publishes them in order.
func (s *service) send(topic string, ev events.Event) {
	s.events <- event{topic: topic, ev: ev}
}

// flush waits until the events queued so far are published (at most 5 s).
func (s *service) flush() {
	done := make(chan struct{})
	s.events <- event{flush: done}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func (s *service) forward() {
	for e := range s.events {
		if e.flush != nil {
			close(e.flush)
			continue
		}
		if err := s.publisher.Publish(s.ctx, e.topic, e.ev); err != nil {
			log.G(s.ctx).WithError(err).WithField("topic", e.topic).Warn("publish event")
		}
	}
	if c, ok := s.publisher.(interface{ Close() error }); ok {
		c.Close()
	}
}

func (s *service) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (s *service) process(id, execID string) (*container, *process, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.process(execID)
	return c, p, err
}

// Create creates the container (its init waits for Start), or with a checkpoint only records
// it: the restore happens at Start, as with runc.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	s.mu.Lock()
	if _, ok := s.containers[r.ID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	s.mu.Unlock()
	c, err := createContainer(ctx, s, r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()
	_, pid, _, _ := c.init.snapshot()
	s.send(ctrdruntime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         uint32(pid),
	})
	return &taskAPI.CreateTaskResponse{Pid: uint32(pid)}, nil
}

// Start starts the init (or restores it from the checkpoint given at Create) or an exec process.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (_ *taskAPI.StartResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		if err := c.start(ctx); err != nil {
			return nil, err
		}
		_, pid, _, _ := p.snapshot()
		s.send(ctrdruntime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: c.id, Pid: uint32(pid)})
		// The shim does in-process what the runc shim leaves to a runc process
		// (namespaces, cgroups, rootfs, maybe a restore): give that garbage back
		// now, as the shim then idles for the container's whole life.
		debug.FreeOSMemory()
		return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
	}
	if err := c.startExec(ctx, p); err != nil {
		return nil, err
	}
	_, pid, _, _ := p.snapshot()
	s.send(ctrdruntime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: p.id, Pid: uint32(pid)})
	return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
}

// Delete deletes an exited exec process, or the container once its init has exited (or was
// never started).
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (_ *taskAPI.DeleteResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		if err := c.deleteExec(p); err != nil {
			return nil, err
		}
	} else {
		if err := c.delete(ctx); err != nil {
			return nil, err
		}
		s.mu.Lock()
		delete(s.containers, c.id)
		s.mu.Unlock()
	}
	_, pid, status, at := p.snapshot()
	if r.ExecID == "" {
		s.send(ctrdruntime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
			ContainerID: c.id, Pid: uint32(pid), ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
		})
	}
	return &taskAPI.DeleteResponse{Pid: uint32(pid), ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Exec records an exec process; Start runs it.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	v, err := typeurl.UnmarshalAny(r.Spec)
	if err != nil {
		return nil, fmt.Errorf("exec %s spec: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	spec, ok := v.(*specs.Process)
	if !ok {
		return nil, fmt.Errorf("exec %s spec is a %T, not a process: %w", r.ExecID, v, errdefs.ErrInvalidArgument)
	}
	stdio := stdioConfig{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	if err := c.addExec(r.ExecID, spec, stdio); err != nil {
		return nil, err
	}
	s.send(ctrdruntime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return &ptypes.Empty{}, nil
}

// ResizePty sets the terminal size of a process that has one.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if p.io == nil {
		return nil, fmt.Errorf("process has no terminal yet: %w", errdefs.ErrFailedPrecondition)
	}
	if err := p.io.resize(r.Width, r.Height); err != nil {
		if errors.Is(err, errInvalid) {
			return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

// State reports a process.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (_ *taskAPI.StateResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	_, pid, status, at := p.snapshot()
	return &taskAPI.StateResponse{
		ID:         p.idOr(c.id),
		Bundle:     c.bundle,
		Pid:        uint32(pid),
		Status:     p.status(ctx),
		Stdin:      p.stdio.Stdin,
		Stdout:     p.stdio.Stdout,
		Stderr:     p.stdio.Stderr,
		Terminal:   p.stdio.Terminal,
		ExitStatus: status,
		ExitedAt:   protobuf.ToTimestamp(at),
		ExecID:     p.id,
	}, nil
}

func (p *process) idOr(containerID string) string {
	if p.id != "" {
		return p.id
	}
	return containerID
}

// Pause freezes the container.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return s.setFrozen(r.ID, (*runtime.Container).Pause, ctrdruntime.TaskPausedEventTopic, &eventstypes.TaskPaused{ContainerID: r.ID})
}

// Resume thaws the container.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return s.setFrozen(r.ID, (*runtime.Container).Resume, ctrdruntime.TaskResumedEventTopic, &eventstypes.TaskResumed{ContainerID: r.ID})
}

// setFrozen pauses or resumes container id with apply and publishes event on topic.
func (s *service) setFrozen(id string, apply func(*runtime.Container) error, topic string, event events.Event) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.get(id)
	if err != nil {
		return nil, err
	}
	rc, err := c.running()
	if err != nil {
		return nil, err
	}
	if err := apply(rc); err != nil {
		return nil, err
	}
	s.send(topic, event)
	return &ptypes.Empty{}, nil
}

// Kill signals the init (all: every process of the container) or an exec process.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := c.kill(p, syscall.Signal(r.Signal), r.All); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

// Pids lists the processes of the container, naming the exec processes.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (_ *taskAPI.PidsResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	rc, err := c.running()
	if err != nil {
		return nil, err
	}
	pids, err := rc.Processes()
	if err != nil {
		return nil, err
	}
	execs := c.execPids()
	resp := &taskAPI.PidsResponse{}
	for _, pid := range pids {
		info := &task.ProcessInfo{Pid: uint32(pid)}
		if id, ok := execs[pid]; ok {
			a, err := typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: id})
			if err != nil {
				return nil, err
			}
			info.Info = a
		}
		resp.Processes = append(resp.Processes, info)
	}
	return resp, nil
}

// CloseIO closes a process's stdin.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin && p.io != nil {
		p.io.closeStdin()
	}
	return &ptypes.Empty{}, nil
}

// Checkpoint saves the container into the directory containerd gives (an OCI image layout
// in cryo's checkpoint format), with runc's checkpoint options.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	opts, err := checkpointOptions(r)
	if err != nil {
		return nil, err
	}
	if err := c.checkpoint(ctx, opts); err != nil {
		return nil, err
	}
	s.send(ctrdruntime.TaskCheckpointedEventTopic, &eventstypes.TaskCheckpointed{ContainerID: c.id, Checkpoint: opts.ImagePath})
	return &ptypes.Empty{}, nil
}

// checkpointOptions maps runc's CheckpointOptions (what ctr and containerd send) onto the
// runtime's. Options cryo cannot honour are refused, not ignored.
func checkpointOptions(r *taskAPI.CheckpointTaskRequest) (runtime.CheckpointOpts, error) {
	// No options means runc's zero CheckpointOptions (exit false): leave the task running,
	// as runc's shim does; nerdctl sends options to runc's runtime only, so `nerdctl
	// checkpoint create --leave-running` relies on it.
	opts := runtime.CheckpointOpts{ImagePath: r.Path, LeaveRunning: true}
	if r.Options == nil {
		return opts, nil
	}
	v, err := typeurl.UnmarshalAny(r.Options)
	if err != nil {
		return opts, fmt.Errorf("checkpoint options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	o, ok := v.(*options.CheckpointOptions)
	if !ok {
		return opts, fmt.Errorf("checkpoint options of type %T: %w", v, errdefs.ErrInvalidArgument)
	}
	if len(o.EmptyNamespaces) > 0 {
		return opts, fmt.Errorf("checkpoint option empty_namespaces %v: cryo saves every namespace it can and refuses the rest: %w", o.EmptyNamespaces, errdefs.ErrNotImplemented)
	}
	switch o.CgroupsMode {
	case "", "soft", "ignore":
		// cryo restores into the cgroup the new container gets from its spec, which is what
		// runc's soft and ignore modes do for a fresh container.
	default:
		return opts, fmt.Errorf("checkpoint option cgroups_mode %q: cryo does not restore cgroup properties from an image: %w", o.CgroupsMode, errdefs.ErrNotImplemented)
	}
	if o.ImagePath != "" {
		opts.ImagePath = o.ImagePath
	}
	opts.WorkPath = o.WorkPath
	opts.ParentPath = o.ParentPath
	opts.LeaveRunning = !o.Exit
	opts.TCPEstablished = o.OpenTcp
	opts.ExtUnixSockets = o.ExternalUnixSockets
	opts.ShellJob = o.Terminal
	opts.FileLocks = o.FileLocks
	return opts, nil
}

// Connect reports the shim's and the init's PIDs.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (_ *taskAPI.ConnectResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if c, err := s.get(r.ID); err == nil {
		_, pid, _, _ := c.init.snapshot()
		resp.TaskPid = uint32(pid)
	}
	return resp, nil
}

// Shutdown stops the shim once it serves no container.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 {
		return &ptypes.Empty{}, nil
	}
	// The last events (the delete) must reach containerd before the publisher closes.
	s.flush()
	s.sd.Shutdown()
	return &ptypes.Empty{}, nil
}

// Stats returns the container's cgroup statistics (containerd's cgroup v1 or v2 metrics).
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (_ *taskAPI.StatsResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	rc, err := c.running()
	if err != nil {
		return nil, err
	}
	cg, err := rc.Cgroup()
	if err != nil {
		return nil, err
	}
	st, err := cg.Stats()
	if err != nil {
		return nil, err
	}
	var metrics any
	switch {
	case st.V1 != nil:
		metrics = st.V1
	case st.V2 != nil:
		metrics = st.V2
	default:
		return nil, fmt.Errorf("no cgroup statistics for %s: %w", c.id, errdefs.ErrNotFound)
	}
	a, err := typeurl.MarshalAnyToProto(metrics)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}

// Update applies new resource limits.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	rc, err := c.running()
	if err != nil {
		return nil, err
	}
	v, err := typeurl.UnmarshalAny(r.Resources)
	if err != nil {
		return nil, fmt.Errorf("update resources: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	res, ok := v.(*specs.LinuxResources)
	if !ok {
		return nil, fmt.Errorf("update resources of type %T: %w", v, errdefs.ErrInvalidArgument)
	}
	if err := rc.Update(res); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

// Wait waits for a process to exit.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (_ *taskAPI.WaitResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, _, status, at := p.snapshot()
	return &taskAPI.WaitResponse{ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// unmountRootfs undoes the rootfs mounts the shim made at Create.
func unmountRootfs(ctx context.Context, bundle string) {
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).WithField("path", bundle).Warn("unmount rootfs")
	}
}
