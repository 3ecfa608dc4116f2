package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/runtime"
)

var execCommand = &cli.Command{
	Name:      "exec",
	Usage:     "run a new process inside a container",
	ArgsUsage: "<container-id> [command args...]",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "process", Aliases: []string{"p"}, Usage: "process.json to run (instead of args)"},
		&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "allocate a pseudo-TTY"},
		&cli.StringFlag{Name: "cwd", Usage: "working directory"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "add an environment variable"},
		&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "uid[:gid]"},
		&cli.Int64SliceFlag{Name: "additional-gids", Aliases: []string{"g"}, Usage: "additional gids"},
		&cli.StringSliceFlag{Name: "cap", Aliases: []string{"c"}, Usage: "add a capability"},
		&cli.BoolFlag{Name: "no-new-privs", Usage: "set no_new_privs"},
		&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "do not wait for the process"},
		&cli.StringFlag{Name: "pid-file", Usage: "file to write the process pid to"},
		&cli.StringFlag{Name: "console-socket", Usage: "AF_UNIX socket that receives the pty master"},
		preserveFdsFlag,
	},
	SkipFlagParsing: false,
	Action: func(ctx *cli.Context) error {
		if ctx.NArg() < 1 {
			return fmt.Errorf("exec: container id required")
		}
		c, err := loadContainer(ctx)
		if err != nil {
			return err
		}
		p, err := execProcess(ctx, c.Spec().Process)
		if err != nil {
			return err
		}
		extra, err := preservedFiles(ctx.Uint("preserve-fds"))
		if err != nil {
			return err
		}
		opts := runtime.ExecOpts{
			ExtraFiles: extra, Process: p, PidFile: ctx.String("pid-file"), ConsoleSocket: ctx.String("console-socket"),
			Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		}
		var tty *ttyProxy
		if p.Terminal && opts.ConsoleSocket == "" && !ctx.Bool("detach") {
			if tty, err = newTTYProxy(); err != nil {
				return err
			}
			defer tty.close()
			opts.ConsoleSocket = tty.sock.Path()
		}
		sigs := make(chan os.Signal, 16)
		if !ctx.Bool("detach") {
			signal.Notify(sigs)
			defer signal.Stop(sigs)
			// In a container with its own user or time namespace the
			// process is our grandchild: adopt it to get its exit status.
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
				return fmt.Errorf("become subreaper: %w", err)
			}
		}
		proc, err := c.Exec(ctx.Context, opts)
		if err != nil {
			return err
		}
		if tty != nil {
			if err := tty.attach(); err != nil {
				return err
			}
		}
		if ctx.Bool("detach") {
			return nil
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
					case unix.SIGWINCH:
						if tty != nil {
							tty.resize()
						}
					default:
						_ = proc.Signal(sig)
					}
				}
			}
		}()
		code, err := proc.Wait()
		close(done)
		if tty != nil {
			tty.drain()
		}
		if err != nil {
			return err
		}
		if code != 0 {
			return &exitError{code: code}
		}
		return nil
	},
}

// execProcess builds the exec'd process from --process or from the
// container's process (env, user, caps, rlimits...) with the flags applied,
// as runc does.
func execProcess(ctx *cli.Context, base *specs.Process) (*specs.Process, error) {
	if path := ctx.String("process"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read process file: %w", err)
		}
		var p specs.Process
		if err := json.Unmarshal(data, &p); err != nil {
			return nil, fmt.Errorf("decode process file: %w", err)
		}
		return &p, nil
	}
	if ctx.NArg() < 2 {
		return nil, fmt.Errorf("exec: command args or --process required")
	}
	p := specs.Process{}
	if base != nil {
		p = *base
		if base.Capabilities != nil {
			caps := *base.Capabilities
			p.Capabilities = &caps
		}
		p.Env = append([]string{}, base.Env...)
	}
	p.Args = ctx.Args().Tail()
	p.Terminal = ctx.Bool("tty")
	p.ConsoleSize = nil
	if cwd := ctx.String("cwd"); cwd != "" {
		p.Cwd = cwd
	}
	p.Env = append(p.Env, ctx.StringSlice("env")...)
	if ctx.Bool("no-new-privs") {
		p.NoNewPrivileges = true
	}
	if u := ctx.String("user"); u != "" {
		uidS, gidS, hasGid := strings.Cut(u, ":")
		uid, err := strconv.ParseUint(uidS, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--user %q: uid must be numeric", u)
		}
		p.User = specs.User{UID: uint32(uid)}
		if hasGid {
			gid, err := strconv.ParseUint(gidS, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("--user %q: gid must be numeric", u)
			}
			p.User.GID = uint32(gid)
		}
	}
	for _, g := range ctx.Int64Slice("additional-gids") {
		p.User.AdditionalGids = append(p.User.AdditionalGids, uint32(g))
	}
	if add := ctx.StringSlice("cap"); len(add) > 0 {
		if p.Capabilities == nil {
			p.Capabilities = &specs.LinuxCapabilities{}
		}
		c := p.Capabilities
		c.Bounding = append(append([]string{}, c.Bounding...), add...)
		c.Effective = append(append([]string{}, c.Effective...), add...)
		c.Permitted = append(append([]string{}, c.Permitted...), add...)
	}
	return &p, nil
}
