package main

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/urfave/cli/v2"

	"github.com/cryo-run/cryo/runtime"
)

var createFlags = []cli.Flag{
	&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "bundle directory"},
	&cli.StringFlag{Name: "pid-file", Usage: "file to write the init's pid to"},
	&cli.StringFlag{Name: "console-socket", Usage: "AF_UNIX socket that receives the pty master"},
	&cli.BoolFlag{Name: "no-pivot", Usage: "use MS_MOVE + chroot instead of pivot_root"},
	&cli.BoolFlag{Name: "no-new-keyring", Usage: "keep the caller's session keyring"},
	preserveFdsFlag,
}

var preserveFdsFlag = &cli.UintFlag{Name: "preserve-fds", Usage: "pass this many of our fds from 3 on to the container process (as the same numbers, in addition to stdio)"}

// preservedFiles returns our fds 3..3+n-1 for --preserve-fds; each must be
// open.
func preservedFiles(n uint) ([]*os.File, error) {
	var files []*os.File
	for fd := 3; fd < 3+int(n); fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("--preserve-fds %d: fd %d: %w", n, fd, err)
		}
		files = append(files, os.NewFile(uintptr(fd), "preserved-"+strconv.Itoa(fd)))
	}
	return files, nil
}

var createCommand = &cli.Command{
	Name:      "create",
	Usage:     "create a container (its process waits for start)",
	ArgsUsage: "<container-id>",
	Flags:     createFlags,
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
		_, err = r.Create(ctx.Context, ctx.Args().First(), opts)
		return err
	},
}

func createOpts(ctx *cli.Context) (runtime.CreateOpts, error) {
	extra, err := preservedFiles(ctx.Uint("preserve-fds"))
	if err != nil {
		return runtime.CreateOpts{}, err
	}
	return runtime.CreateOpts{
		ExtraFiles:    extra,
		Bundle:        ctx.String("bundle"),
		PidFile:       ctx.String("pid-file"),
		ConsoleSocket: ctx.String("console-socket"),
		NoPivot:       ctx.Bool("no-pivot"),
		NoNewKeyring:  ctx.Bool("no-new-keyring"),
		Stdin:         os.Stdin,
		Stdout:        os.Stdout,
		Stderr:        os.Stderr,
	}, nil
}
