package main

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/cryo-run/cryo/runtime"
)

var deleteCommand = &cli.Command{
	Name:      "delete",
	Usage:     "delete a container (a running one only with --force)",
	ArgsUsage: "<container-id>",
	Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "kill a running container first"}},
	Action: func(ctx *cli.Context) error {
		if err := checkArgs(ctx, 1); err != nil {
			return err
		}
		c, err := loadContainer(ctx)
		if err != nil {
			// runc: delete --force of a container that does not exist is not an error.
			if ctx.Bool("force") && errors.Is(err, runtime.ErrNotExist) {
				return nil
			}
			return err
		}
		return c.Delete(ctx.Context, ctx.Bool("force"))
	},
}
