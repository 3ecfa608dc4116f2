package cgroups

import "errors"

var (
	// ErrNotExist is returned by Load when the cgroup does not exist.
	ErrNotExist = errors.New("cgroup does not exist")
	// ErrUnsupported is returned for a resource or operation that the
	// host's cgroup setup cannot provide (missing controller, v2-only
	// key on v1, ...).
	ErrUnsupported = errors.New("not supported by the host's cgroups")
	// ErrTimeout is returned when a freeze, a thaw or a removal does not
	// converge within its bounded wait.
	ErrTimeout = errors.New("cgroup did not converge in time")
	// ErrInvalid is returned for an invalid path or resource value.
	ErrInvalid = errors.New("invalid cgroup configuration")
)
