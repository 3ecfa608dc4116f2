package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

var updateCommand = &cli.Command{
	Name:      "update",
	Usage:     "update a container's resource limits (not yet)",
	ArgsUsage: "<container-id>",
	Action: func(ctx *cli.Context) error {
		return fmt.Errorf("update: not implemented yet")
	},
}
