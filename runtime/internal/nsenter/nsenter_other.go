//go:build !cgo || !linux

// Package nsenter joins namespaces that only a single-threaded process may
// join (user, time) before the Go runtime starts. Without cgo the constructor
// that does so is missing, and the runtime refuses such joins.
package nsenter

// Env is the environment variable listing the namespace fds to join.
const Env = "_CRYO_SETNS"

// Available reports whether the constructor is linked in (cgo builds).
const Available = false
