package shim

import (
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/cryo-run/cryo/runtime"
)

func init() {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			sd, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			return newService(ic.Context, pp.(shim.Publisher), sd.(shutdown.Service))
		},
	})
}

// Reexec runs the container init when the shim binary was started as one (the runtime
// re-executes /proc/self/exe for each container and exec process) and never returns then.
// main must call it before anything else.
func Reexec() bool {
	return runtime.Reexec()
}

// BinaryOpts are the shim binary options cryo needs. The runtime waits for its own children
// (the container inits and exec processes, through os/exec), so containerd's SIGCHLD reaper,
// which reaps every child with wait4(-1), must not run: it would steal those exit statuses.
// Nothing else is reparented to the shim either, so it is no subreaper.
func BinaryOpts(c *shim.Config) {
	c.NoReaper = true
	c.NoSubreaper = true
}

// SetVersion records the binary's version in the checkpoints it writes.
func SetVersion(v string) {
	runtime.Version = v
}
