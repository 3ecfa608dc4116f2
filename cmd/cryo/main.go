// Command cryo is a runc-compatible OCI runtime with a native checkpoint/restore engine.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/cryo-run/cryo/runtime"
)

// version is set at link time by the Makefile.
var version = "dev"

// exitError carries a process exit code out of a command without printing.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	if runtime.Reexec() {
		return
	}
	runtime.Version = version
	app := newApp()
	if err := app.Run(os.Args); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		logrus.Error(err)
		if logrus.StandardLogger().Out != os.Stderr {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:    "cryo",
		Usage:   "OCI runtime with native checkpoint/restore",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: runtime.DefaultRoot, Usage: "directory for container state"},
			&cli.StringFlag{Name: "log", Usage: "log file (default stderr)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json"},
			&cli.BoolFlag{Name: "debug", Usage: "debug logging"},
			&cli.BoolFlag{Name: "systemd-cgroup", Usage: "use systemd for cgroups (not supported)"},
		},
		Before:          configure,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			createCommand, startCommand, runCommand, stateCommand, killCommand, deleteCommand,
			listCommand, psCommand, specCommand, featuresCommand, execCommand,
			pauseCommand, resumeCommand, updateCommand, eventsCommand,
			checkpointCommand, restoreCommand, inspectCommand,
		},
	}
	cli.VersionPrinter = func(c *cli.Context) {
		fmt.Fprintf(c.App.Writer, "cryo version %s\nspec: %s\n", version, specVersion())
	}
	return app
}

// configure sets up logging (only main configures logrus) and refuses
// options this runtime does not have.
func configure(ctx *cli.Context) error {
	logrus.SetOutput(os.Stderr)
	if p := ctx.String("log"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_SYNC, 0o644)
		if err != nil {
			return fmt.Errorf("open log file: %w", err)
		}
		logrus.SetOutput(io.Writer(f))
	}
	switch ctx.String("log-format") {
	case "text":
		logrus.SetFormatter(&logrus.TextFormatter{})
	case "json":
		logrus.SetFormatter(&logrus.JSONFormatter{})
	default:
		return fmt.Errorf("unknown log-format %q (text or json)", ctx.String("log-format"))
	}
	if ctx.Bool("debug") {
		logrus.SetLevel(logrus.DebugLevel)
	}
	if ctx.Bool("systemd-cgroup") {
		return fmt.Errorf("--systemd-cgroup: %w: cryo manages cgroupfs directly", runtime.ErrNotSupported)
	}
	return nil
}

func newRuntime(ctx *cli.Context) (*runtime.Runtime, error) {
	return runtime.New(ctx.String("root"))
}

func loadContainer(ctx *cli.Context) (*runtime.Container, error) {
	id := ctx.Args().First()
	if id == "" {
		return nil, errors.New("container id cannot be empty")
	}
	r, err := newRuntime(ctx)
	if err != nil {
		return nil, err
	}
	return r.Load(id)
}

func checkArgs(ctx *cli.Context, n int) error {
	if ctx.NArg() != n {
		return fmt.Errorf("%s: %d argument(s) required, got %d", ctx.Command.Name, n, ctx.NArg())
	}
	return nil
}
