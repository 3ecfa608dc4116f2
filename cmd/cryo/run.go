package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/containerd/console"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/oci"
	"github.com/cryo-run/cryo/runtime"
)

var runCommand = &cli.Command{
	Name:      "run",
	Usage:     "create and start a container; without --detach wait for it and exit with its status",
	ArgsUsage: "<container-id>",
	Flags:     append([]cli.Flag{&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "do not wait for the container"}}, createFlags...),
	Action: func(ctx *cli.Context) error {
		if err := checkArgs(ctx, 1); err != nil {
			return err
		}
		r, err := newRuntime(ctx)
		if err != nil {
			return err
		}
		opts, err := createOpts(ctx)
		if err != nil {
			return err
		}
		spec, err := oci.LoadSpec(opts.Bundle)
		if err != nil {
			return err
		}
		opts.Spec = spec
		return launch(ctx, spec, &opts, ctx.Bool("detach"), true, func() (*runtime.Container, error) {
			return r.Create(ctx.Context, ctx.Args().First(), opts)
		})
	},
}

// launch makes a container with create (a create or a restore) and, unless
// detached, waits for it in the foreground and returns its exit status. When
// the process has a terminal and the caller stays attached, the pty is
// proxied to the caller's stdio. start is false when create leaves the
// container running already (a restore).
func launch(ctx *cli.Context, spec *specs.Spec, opts *runtime.CreateOpts, detach, start bool, create func() (*runtime.Container, error)) error {
	var tty *ttyProxy
	if spec != nil && spec.Process != nil && spec.Process.Terminal && !detach && opts.ConsoleSocket == "" {
		var err error
		if tty, err = newTTYProxy(); err != nil {
			return err
		}
		defer tty.close()
		opts.ConsoleSocket = tty.sock.Path()
	}
	if !detach {
		// An init forked by the nsenter constructor (a container joining a
		// user namespace by path) is our grandchild: adopt it to get its
		// exit status.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("become subreaper: %w", err)
		}
	}
	c, err := create()
	if err != nil {
		return err
	}
	if tty != nil {
		if err := tty.attach(); err != nil {
			_ = c.Delete(ctx.Context, true)
			return err
		}
	}
	if !detach {
		return waitForeground(ctx, c, tty, start)
	}
	if start {
		if err := c.Start(ctx.Context); err != nil {
			_ = c.Delete(ctx.Context, true)
			return err
		}
	}
	return nil
}

// waitForeground starts c (unless it runs already, as after a restore),
// forwards signals to its init, waits for it, deletes it and returns its
// exit status.
func waitForeground(ctx *cli.Context, c *runtime.Container, tty *ttyProxy, start bool) error {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	if start {
		if err := c.Start(ctx.Context); err != nil {
			_ = c.Delete(ctx.Context, true)
			return err
		}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case s := <-sigs:
				sig := s.(syscall.Signal)
				switch sig {
				case unix.SIGCHLD, unix.SIGURG, unix.SIGPIPE:
					continue
				case unix.SIGWINCH:
					if tty != nil {
						tty.resize()
					}
					continue
				}
				if err := c.Kill(sig, false); err != nil {
					logrus.WithError(err).WithField("id", c.ID()).Debug("forward signal")
				}
			}
		}
	}()
	code, err := c.Wait()
	close(done)
	if tty != nil {
		tty.drain()
	}
	if derr := c.Delete(ctx.Context, true); derr != nil && err == nil {
		err = derr
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// ttyProxy receives the container's pty master and connects it to our stdio.
type ttyProxy struct {
	dir     string
	sock    *runtime.ConsoleSocket
	master  *os.File
	current console.Console
	copied  chan struct{}
}

func newTTYProxy() (*ttyProxy, error) {
	dir, err := os.MkdirTemp("", "cryo-tty-")
	if err != nil {
		return nil, err
	}
	s, err := runtime.NewConsoleSocket(filepath.Join(dir, "console.sock"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &ttyProxy{dir: dir, sock: s, copied: make(chan struct{})}, nil
}

func (t *ttyProxy) attach() error {
	m, err := t.sock.ReceiveMaster()
	if err != nil {
		return err
	}
	t.master = m
	if cur, err := console.ConsoleFromFile(os.Stdin); err == nil {
		t.current = cur
		if err := cur.SetRaw(); err != nil {
			return fmt.Errorf("set terminal raw: %w", err)
		}
		t.resize()
	}
	go func() { _, _ = io.Copy(m, os.Stdin) }()
	go func() {
		_, _ = io.Copy(os.Stdout, m)
		close(t.copied)
	}()
	return nil
}

func (t *ttyProxy) resize() {
	if t.current == nil || t.master == nil {
		return
	}
	if ws, err := t.current.Size(); err == nil {
		if c, err := console.ConsoleFromFile(t.master); err == nil {
			_ = c.Resize(ws)
		}
	}
}

// drain waits until the pty master has delivered everything (EIO once the
// last slave fd is closed).
func (t *ttyProxy) drain() {
	if t.master != nil {
		<-t.copied
	}
}

func (t *ttyProxy) close() {
	if t.current != nil {
		_ = t.current.Reset()
	}
	if t.master != nil {
		t.master.Close()
	}
	t.sock.Close()
	os.RemoveAll(t.dir)
}
