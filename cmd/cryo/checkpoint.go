package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/cryo-run/cryo/oci"
	"github.com/cryo-run/cryo/runtime"
)

// unsupportedFlags are runc checkpoint/restore flags whose feature cryo does
// not have yet: using one is an error, never silently ignored.
var unsupportedFlags = map[string]string{
	"lazy-pages":  "lazy restore (post-copy)",
	"page-server": "page server",
	"empty-ns":    "empty network namespace (--empty-ns)",
	"auto-dedup":  "auto-dedup",
	"status-fd":   "status fd",
}

func checkUnsupported(ctx *cli.Context) error {
	for name, what := range unsupportedFlags {
		if ctx.IsSet(name) {
			return fmt.Errorf("--%s: %s %w yet", name, what, runtime.ErrNotSupported)
		}
	}
	switch m := ctx.String("manage-cgroups-mode"); m {
	case "", "soft", "full", "strict":
		// cryo always restores into a fresh cgroup made from the bundle's
		// spec, which is what full and strict ask for; soft adds nothing.
	default:
		return fmt.Errorf("--manage-cgroups-mode %q: %w (cryo restores into the bundle's cgroup: soft, full or strict)", m, runtime.ErrNotSupported)
	}
	return nil
}

// c/r flags shared by checkpoint and restore, named as runc names them.
var crFlags = []cli.Flag{
	&cli.StringFlag{Name: "image-path", Usage: "checkpoint image directory (OCI layout; default ./checkpoint)"},
	&cli.StringFlag{Name: "work-path", Usage: "directory for the engine's scratch files"},
	&cli.StringFlag{Name: "archive", Usage: "the checkpoint as one OCI layout .tar (written as well / read instead of --image-path)"},
	&cli.BoolFlag{Name: "tcp-established", Usage: "allow established TCP connections"},
	&cli.BoolFlag{Name: "ext-unix-sk", Usage: "allow unix sockets connected outside the container"},
	&cli.BoolFlag{Name: "shell-job", Usage: "allow a shell job (a terminal from outside the container)"},
	&cli.BoolFlag{Name: "file-locks", Usage: "save and restore file locks"},
	&cli.StringFlag{Name: "manage-cgroups-mode", Usage: "cgroups mode: soft, full or strict"},
	// runc's --empty-ns takes a namespace type (repeatable), as go-runc passes it.
	&cli.StringSliceFlag{Name: "empty-ns", Usage: "not supported yet"},
	&cli.BoolFlag{Name: "auto-dedup", Usage: "not supported yet"},
	&cli.BoolFlag{Name: "lazy-pages", Usage: "not supported yet"},
	&cli.IntFlag{Name: "status-fd", Usage: "not supported yet"},
}

var checkpointCommand = &cli.Command{
	Name:      "checkpoint",
	Usage:     "checkpoint a running container into an OCI image layout",
	ArgsUsage: "<container-id>",
	Flags: append([]cli.Flag{
		&cli.StringFlag{Name: "parent-path", Usage: "previous checkpoint: write an incremental image on top of it"},
		&cli.BoolFlag{Name: "leave-running", Usage: "leave the container running after the checkpoint"},
		&cli.BoolFlag{Name: "pre-dump", Usage: "a pre-copy pass: checkpoint leaving the container running and tracking the pages it writes; a later checkpoint with --parent-path saves only those"},
		&cli.BoolFlag{Name: "pre-copy", Usage: "copy the container's memory while it runs, then stop it only for what it wrote meanwhile and the rest of its state (the default with --leave-running; otherwise a shorter downtime for a longer checkpoint)"},
		&cli.BoolFlag{Name: "no-pre-copy", Usage: "stop the container for the whole dump (with --leave-running: instead of copying its memory while it runs first)"},
		&cli.StringFlag{Name: "page-server", Usage: "not supported yet"},
		&cli.StringFlag{Name: "name", Usage: "name recorded in the image (default: the container id)"},
	}, crFlags...),
	Subcommands: []*cli.Command{checkpointLsCommand, checkpointRmCommand},
	Action: func(ctx *cli.Context) error {
		err := checkpoint(ctx)
		if err != nil {
			writeWorkLog(ctx.String("work-path"), "dump.log", err)
		}
		return err
	},
}

// writeWorkLog leaves the error of a failed checkpoint in the work directory as
// dump.log, where runc leaves CRIU's log: containerd's runc shim copies it next
// to the bundle and names it in the error it returns.
func writeWorkLog(dir, name string, failure error) {
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	_ = os.WriteFile(filepath.Join(dir, name), []byte("cryo: "+failure.Error()+"\n"), 0o600)
}

func checkpoint(ctx *cli.Context) error {
	if err := checkArgs(ctx, 1); err != nil {
		return err
	}
	if err := checkUnsupported(ctx); err != nil {
		return err
	}
	if ctx.Bool("pre-copy") && (ctx.Bool("no-pre-copy") || ctx.String("parent-path") != "") {
		return errors.New("--pre-copy cannot be combined with --no-pre-copy or --parent-path")
	}
	c, err := loadContainer(ctx)
	if err != nil {
		return err
	}
	image := ctx.String("image-path")
	if image == "" {
		if ctx.String("archive") != "" {
			dir, err := os.MkdirTemp(filepath.Dir(ctx.String("archive")), ".cryo-layout-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			image = filepath.Join(dir, "image")
		} else {
			image = "checkpoint"
		}
	}
	_, err = c.Checkpoint(ctx.Context, runtime.CheckpointOpts{
		ImagePath: image, Archive: ctx.String("archive"), WorkPath: ctx.String("work-path"),
		ParentPath: ctx.String("parent-path"), Name: ctx.String("name"),
		LeaveRunning: ctx.Bool("leave-running") || ctx.Bool("pre-dump"),
		PreCopy:      ctx.Bool("pre-copy"), NoPreCopy: ctx.Bool("no-pre-copy"),
		TCPEstablished: ctx.Bool("tcp-established"),
		ExtUnixSockets: ctx.Bool("ext-unix-sk"), ShellJob: ctx.Bool("shell-job"), FileLocks: ctx.Bool("file-locks"),
	})
	return err
}

var checkpointLsCommand = &cli.Command{
	Name:      "ls",
	Usage:     "list the checkpoint images in a directory",
	ArgsUsage: "<dir>",
	Flags:     []cli.Flag{&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"}},
	Action: func(ctx *cli.Context) error {
		if err := checkArgs(ctx, 1); err != nil {
			return err
		}
		list, err := oci.List(ctx.Args().First())
		if err != nil {
			return err
		}
		if ctx.String("format") == "json" {
			return json.NewEncoder(os.Stdout).Encode(list)
		}
		w := tabwriter.NewWriter(os.Stdout, 12, 1, 3, ' ', 0)
		fmt.Fprintln(w, "PATH\tNAME\tCONTAINER\tCREATED\tOWNER")
		for _, e := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", e.Path, e.Name, e.ContainerID, e.Created.Format("2006-01-02T15:04:05Z07:00"), e.Owner)
		}
		return w.Flush()
	},
}

var checkpointRmCommand = &cli.Command{
	Name:      "rm",
	Usage:     "delete a checkpoint image (its owner or root only)",
	ArgsUsage: "<image>",
	Action: func(ctx *cli.Context) error {
		if err := checkArgs(ctx, 1); err != nil {
			return err
		}
		return oci.Remove(ctx.Args().First(), os.Getuid())
	},
}

var restoreCommand = &cli.Command{
	Name:      "restore",
	Usage:     "restore a container from a checkpoint; without --detach wait for it and exit with its status",
	ArgsUsage: "<container-id>",
	Flags: append(append([]cli.Flag{
		&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "do not wait for the container"},
		&cli.BoolFlag{Name: "no-subreaper", Usage: "accepted for runc compatibility (cryo is not a subreaper)"},
		&cli.StringFlag{Name: "lsm-profile", Usage: "not supported (no LSM on this host)"},
		&cli.StringFlag{Name: "lsm-mount-context", Usage: "not supported (no LSM on this host)"},
		&cli.BoolFlag{Name: "verify-full", Usage: "hash every blob of the image, even those this host wrote or verified since boot and nobody changed since"},
	}, crFlags...), createFlags...),
	Action: func(ctx *cli.Context) error {
		if err := checkArgs(ctx, 1); err != nil {
			return err
		}
		if err := checkUnsupported(ctx); err != nil {
			return err
		}
		for _, f := range []string{"lsm-profile", "lsm-mount-context"} {
			if ctx.IsSet(f) {
				return fmt.Errorf("--%s: %w", f, runtime.ErrNotSupported)
			}
		}
		r, err := newRuntime(ctx)
		if err != nil {
			return err
		}
		image := ctx.String("image-path")
		if a := ctx.String("archive"); a != "" {
			image = a
		} else if image == "" {
			image = "checkpoint"
		}
		if ctx.Uint("preserve-fds") > 0 {
			// The restored tree gets its files from the checkpoint.
			return fmt.Errorf("--preserve-fds with restore: %w", runtime.ErrNotSupported)
		}
		copts, err := createOpts(ctx)
		if err != nil {
			return err
		}
		opts := runtime.RestoreOpts{CreateOpts: copts, ImagePath: image, WorkPath: ctx.String("work-path"), VerifyFull: ctx.Bool("verify-full")}
		// Without a config.json in the bundle the restore uses the spec
		// saved in the image (a container moved with just its rootfs).
		spec, err := oci.LoadSpec(opts.Bundle)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		opts.Spec = spec
		return launch(ctx, spec, &opts.CreateOpts, ctx.Bool("detach"), false, func() (*runtime.Container, error) {
			return r.Restore(ctx.Context, ctx.Args().First(), opts)
		})
	},
}

var inspectCommand = &cli.Command{
	Name:      "inspect",
	Usage:     "show what a checkpoint image holds (like IRIX cpr -i)",
	ArgsUsage: "<image-dir|archive.tar>",
	Flags:     []cli.Flag{&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"}},
	Action: func(ctx *cli.Context) error {
		if err := checkArgs(ctx, 1); err != nil {
			return err
		}
		s, err := oci.Inspect(ctx.Args().First())
		if err != nil {
			return err
		}
		switch ctx.String("format") {
		case "json":
			return s.WriteJSON(os.Stdout)
		case "text":
			return s.WriteText(os.Stdout)
		default:
			return fmt.Errorf("unknown format %q (text or json)", ctx.String("format"))
		}
	},
}
