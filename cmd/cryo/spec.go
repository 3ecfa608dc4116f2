package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/oci"
	"github.com/cryo-run/cryo/runtime"
)

var specCommand = &cli.Command{
	Name:  "spec",
	Usage: "write a default config.json into the bundle",
	Flags: []cli.Flag{&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "bundle directory"}},
	Action: func(ctx *cli.Context) error {
		path := filepath.Join(ctx.String("bundle"), oci.ConfigFile)
		data, err := json.MarshalIndent(runtime.DefaultSpec(), "", "\t")
		if err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("file %s exists; remove it first", path)
			}
			return err
		}
		if _, err := f.Write(append(data, '\n')); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	},
}
