package main

import (
	"encoding/json"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/cryo-run/cryo/runtime"
)

var featuresCommand = &cli.Command{
	Name:  "features",
	Usage: "print what this runtime supports (OCI features document)",
	Action: func(ctx *cli.Context) error {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "    ")
		return enc.Encode(runtime.Features())
	},
}
