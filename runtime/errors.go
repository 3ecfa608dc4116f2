package runtime

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
)

// classed is a sentinel error that also belongs to a containerd errdefs class,
// so callers (the shim) can map it with errdefs without string matching.
type classed struct {
	msg   string
	class error
}

func (e *classed) Error() string { return e.msg }
func (e *classed) Unwrap() error { return e.class }

var (
	// ErrNotExist: no container with that id under the runtime root.
	ErrNotExist error = &classed{"container does not exist", errdefs.ErrNotFound}
	// ErrExist: a container with that id already exists.
	ErrExist error = &classed{"container with given id already exists", errdefs.ErrAlreadyExists}
	// ErrInvalidID: the id has characters other than [A-Za-z0-9_+.-] or is empty.
	ErrInvalidID error = &classed{"invalid container id format", errdefs.ErrInvalidArgument}
	// ErrNotRunning: the operation needs a live (created, running or paused) container.
	ErrNotRunning error = &classed{"container not running", errdefs.ErrFailedPrecondition}
	// ErrNotPaused: resume of a container that is not paused.
	ErrNotPaused error = &classed{"container not paused", errdefs.ErrFailedPrecondition}
	// ErrNotStopped: delete without force of a container that still runs.
	ErrNotStopped error = &classed{"container is not stopped", errdefs.ErrFailedPrecondition}
	// ErrAlreadyStarted: start of a container that is running or paused.
	ErrAlreadyStarted error = &classed{"cannot start an already running container", errdefs.ErrFailedPrecondition}
	// ErrStopped: start or exec of a container that has stopped.
	ErrStopped error = &classed{"cannot start a container that has stopped", errdefs.ErrFailedPrecondition}
	// ErrPaused: exec into a paused container.
	ErrPaused error = &classed{"cannot exec in a paused container", errdefs.ErrFailedPrecondition}
	// ErrNotSupported: a valid setting this runtime cannot honour on this host.
	ErrNotSupported error = &classed{"not supported", errdefs.ErrNotImplemented}
	// ErrInvalidConfig: a process or container setting that cannot be applied as written.
	ErrInvalidConfig error = &classed{"invalid configuration", errdefs.ErrInvalidArgument}
)

// detailed is an error with its own message that still matches a sentinel.
type detailed struct {
	msg      string
	sentinel error
}

func (e *detailed) Error() string { return e.msg }
func (e *detailed) Unwrap() error { return e.sentinel }

func withMessage(sentinel error, format string, args ...any) error {
	return &detailed{msg: fmt.Sprintf(format, args...), sentinel: sentinel}
}

// errInitExited is returned when the init process died before reporting.
var errInitExited = errors.New("container init exited before reporting")
