// Package runtime runs OCI containers: the lifecycle of runc (create, start,
// run, state, kill, delete, exec, pause, resume, update, events) as plain Go
// calls, with the state of each container in a directory under the runtime
// root (default /run/cryo, 0700 directories).
//
// # Lifecycle
//
//	r, _ := runtime.New("/run/cryo")
//	c, _ := r.Create(ctx, id, runtime.CreateOpts{Bundle: dir})  // created: init waits
//	_ = c.Start(ctx)                                             // running: process.args exec'd
//	p, _ := c.Exec(ctx, runtime.ExecOpts{Process: proc})         // joins namespaces + cgroup
//	_ = c.Kill(unix.SIGTERM, false)
//	_ = c.Delete(ctx, false)                                     // stopped -> removed
//
// Status is explicit: creating, created, running, paused, stopped. Wrong-state
// operations fail with the sentinels of errors.go (runc's messages), which
// also match containerd's errdefs classes.
//
// # The init
//
// The container's init is this program re-executed (Runtime.InitCommand,
// default /proc/self/exe init): every main and every TestMain that creates
// containers must call Reexec first. The init receives its configuration over
// a socketpair, sets up the namespaces, rootfs and process, reports ready and
// then waits on a unix socket in the state dir for Start (runc's exec.fifo,
// with a reply: Start returns the init's exec error, if any). See
// init_linux.go for how namespaces are created and joined.
//
// # Restore
//
// CreateOpts.InitELF makes Create exec the given ELF (from a sealed memfd,
// execveat AT_EMPTY_PATH) as the init instead of process.args, right after
// namespaces, rootfs and cgroup are set up exactly as for a normal create,
// and return a running container: Container.Pid is then the host pid of that
// process (PID 1 of the new pid namespace), to be handed to engine.Restore.
//
// # Checkpoint
//
// Container.Pid (the init's host pid), Container.Cgroup (a
// runtime/cgroups.Manager, whose Freeze/Thaw satisfy engine.Freezer),
// Container.Spec, Bundle, Rootfs and StateDir give a checkpoint what it needs.
package runtime
