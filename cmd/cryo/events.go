package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

var eventsCommand = &cli.Command{
	Name:      "events",
	Usage:     "print container events and statistics (not yet)",
	ArgsUsage: "<container-id>",
	Action: func(ctx *cli.Context) error {
		return fmt.Errorf("events: not implemented yet")
	},
}
