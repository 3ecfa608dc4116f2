//go:build cgo

// Package nsenter joins namespaces that only a single-threaded process may
// join (user, time) before the Go runtime starts: a C constructor reads the
// fds listed in the Env variable and calls setns on each. The runtime passes
// them to a re-executed init. Importing this package is what links the
// constructor in.
package nsenter

import "C"

// Env is the environment variable listing the namespace fds to join, in
// order, as decimal numbers separated by commas.
const Env = "_CRYO_SETNS"

// RootEnv ("1") makes the constructor become root (uid and gid 0) of the
// user namespace it joined; UnshareEnv (decimal clone flags) makes it
// unshare those namespaces after the joins, so that they belong to the
// joined user namespace; ForkEnv ("1") makes it fork last, the parent
// exiting at once and the child, inside the joined or new pid namespace,
// going on.
const (
	RootEnv    = "_CRYO_SETNS_ROOT"
	UnshareEnv = "_CRYO_UNSHARE"
	ForkEnv    = "_CRYO_FORK"
)

// Available reports whether the constructor is linked in (cgo builds).
const Available = true

// ExitCode is the exit status of a process whose constructor could not join
// or create the namespaces it was asked to (it says why on stderr).
const ExitCode = 125
