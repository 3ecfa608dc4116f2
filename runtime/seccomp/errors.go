package seccomp

import "errors"

var (
	// ErrInvalid is returned for a profile that cannot be compiled: unknown
	// action, operator, architecture or flag, bad argument index, errnoRet
	// on an action that has no errno.
	ErrInvalid = errors.New("invalid seccomp profile")
	// ErrTooLarge is returned when the compiled program exceeds the
	// kernel's limit of 4096 instructions.
	ErrTooLarge = errors.New("seccomp program too large")
)
