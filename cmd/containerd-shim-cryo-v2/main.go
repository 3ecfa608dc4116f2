//go:build linux

// Command containerd-shim-cryo-v2 is containerd's shim for the runtime type
// io.containerd.cryo.v2: one process per container (or per pod) that drives the cryo runtime
// in-process and serves the task API over ttrpc.
package main

import (
	"context"

	containerdshim "github.com/containerd/containerd/v2/pkg/shim"

	"github.com/cryo-run/cryo/shim"
)

// version is set at link time by the Makefile.
var version = "dev"

func main() {
	if shim.Reexec() {
		return
	}
	shim.SetVersion(version)
	containerdshim.RunShim(context.Background(), shim.NewManager(shim.RuntimeName, version), shim.BinaryOpts)
}
