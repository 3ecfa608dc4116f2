package shim

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/api/types/task"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/runtime"
)

// procState is where a process is in containerd's task lifecycle.
type procState int

const (
	procCreated procState = iota
	procRunning
	procStopped
)

// process is the init (id "") or an exec process of a container.
type process struct {
	id    string // exec id; "" for the init
	ctr   *container
	spec  *specs.Process // exec processes
	stdio stdioConfig
	io    *procIO

	mu         sync.Mutex
	state      procState
	pid        int
	exitStatus uint32
	exitedAt   time.Time
	done       chan struct{} // closed once the exit is recorded and the output drained

	exec *runtime.Process // exec processes, once started
}

func newProcess(c *container, id string, stdio stdioConfig, spec *specs.Process) *process {
	return &process{id: id, ctr: c, stdio: stdio, spec: spec, done: make(chan struct{})}
}

func (p *process) snapshot() (procState, int, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.pid, p.exitStatus, p.exitedAt
}

// setRunning marks a started process running, unless its exit was already recorded: a fast
// process can exit before the start call returns.
func (p *process) setRunning(pid int) {
	p.mu.Lock()
	p.pid = pid
	if p.state == procCreated {
		p.state = procRunning
	}
	p.mu.Unlock()
}

// exited records the exit once the output has drained (so a client waiting on the exit has
// all of it) and wakes the waiters.
func (p *process) exited(status int) {
	p.io.wait(2 * time.Second)
	p.mu.Lock()
	p.state = procStopped
	if status < 0 {
		status = 255
	}
	p.exitStatus = uint32(status)
	p.exitedAt = time.Now()
	p.mu.Unlock()
	close(p.done)
}

func (p *process) status(ctx context.Context) task.Status {
	st, _, _, _ := p.snapshot()
	switch st {
	case procCreated:
		return task.Status_CREATED
	case procStopped:
		return task.Status_STOPPED
	}
	if p.id == "" && p.ctr.rc != nil {
		if s, err := p.ctr.rc.Status(); err == nil && s == runtime.Paused {
			return task.Status_PAUSED
		}
	}
	return task.Status_RUNNING
}

// consoleSocket makes a short-lived socket for the runtime to hand over a pty master; unix
// socket paths are short, so it lives in a private temporary directory, not in the bundle.
func consoleSocket() (*runtime.ConsoleSocket, func(), error) {
	dir, err := os.MkdirTemp("", "cryo-pty-")
	if err != nil {
		return nil, nil, err
	}
	cs, err := runtime.NewConsoleSocket(filepath.Join(dir, "pty.sock"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return cs, func() { cs.Close(); os.RemoveAll(dir) }, nil
}
