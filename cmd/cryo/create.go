package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/cryo-run/cryo/runtime"
)

var createFlags = []cli.Flag{
	&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "bundle directory"},
	&cli.StringFlag{Name: "pid-file", Usage: "file to write the init's pid to"},
	&cli.StringFlag{Name: "console-socket", Usage: "AF_UNIX socket that receives the pty master"},
	&cli.BoolFlag{Name: "no-pivot", Usage: "use MS_MOVE + chroot instead of pivot_root"},
	&cli.BoolFlag{Name: "no-new-keyring", Usage: "keep the caller's session keyring"},
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
		_, err = r.Create(ctx.Context, ctx.Args().First(), createOpts(ctx))
		return err
	},
}

func createOpts(ctx *cli.Context) runtime.CreateOpts {
	return runtime.CreateOpts{
		Bundle:        ctx.String("bundle"),
		PidFile:       ctx.String("pid-file"),
		ConsoleSocket: ctx.String("console-socket"),
		NoPivot:       ctx.Bool("no-pivot"),
		NoNewKeyring:  ctx.Bool("no-new-keyring"),
		Stdin:         os.Stdin,
		Stdout:        os.Stdout,
		Stderr:        os.Stderr,
	}
}
