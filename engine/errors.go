package engine

import "errors"

var (
	// ErrUnsupported marks what the engine refuses to dump (or restore) yet:
	// the error names the task, the fd or mapping, and what it is.
	ErrUnsupported = errors.New("not supported")
	// ErrInvalidOptions marks options that cannot work (no pid, no image directory...).
	ErrInvalidOptions = errors.New("invalid options")
)
