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

// Available reports whether the constructor is linked in (cgo builds).
const Available = true
