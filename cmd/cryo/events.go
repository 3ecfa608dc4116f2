package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryo-run/cryo/runtime"
)

// event is one line of `cryo events` output (runc's shape).
type event struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data any    `json:"data,omitempty"`
}

var eventsCommand = &cli.Command{
	Name:      "events",
	Usage:     "print container statistics every interval and OOM events, as JSON lines",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.DurationFlag{Name: "interval", Value: 5 * time.Second, Usage: "statistics interval"},
		&cli.BoolFlag{Name: "stats", Usage: "print the statistics once and exit"},
	},
	Action: func(ctx *cli.Context) error {
		if err := checkArgs(ctx, 1); err != nil {
			return err
		}
		if ctx.Duration("interval") <= 0 {
			return errors.New("--interval must be positive")
		}
		c, err := loadContainer(ctx)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		stats := func() error {
			st, err := c.Stats()
			if err != nil {
				return err
			}
			return enc.Encode(event{Type: "stats", ID: c.ID(), Data: st})
		}
		if ctx.Bool("stats") {
			return stats()
		}
		cctx, cancel := context.WithCancel(ctx.Context)
		defer cancel()
		ooms, err := c.OOMEvents(cctx)
		if err != nil {
			return err
		}
		tick := time.NewTicker(ctx.Duration("interval"))
		defer tick.Stop()
		for {
			if st, err := c.Status(); err != nil || st == runtime.Stopped {
				return err
			}
			if err := stats(); err != nil {
				if errors.Is(err, runtime.ErrNotRunning) {
					return nil
				}
				return err
			}
			select {
			case _, ok := <-ooms:
				if ok {
					if err := enc.Encode(event{Type: "oom", ID: c.ID()}); err != nil {
						return err
					}
				} else {
					ooms = nil
				}
			case <-tick.C:
			}
		}
	},
}
