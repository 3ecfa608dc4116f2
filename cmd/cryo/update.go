package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	units "github.com/docker/go-units"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"
)

var updateCommand = &cli.Command{
	Name:      "update",
	Usage:     "update a container's resource limits",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "resources", Aliases: []string{"r"}, Usage: "LinuxResources JSON file (- for stdin)"},
		&cli.StringFlag{Name: "blkio-weight", Usage: "block IO weight (10-1000)"},
		&cli.StringFlag{Name: "cpu-period", Usage: "CPU CFS period (us)"},
		&cli.StringFlag{Name: "cpu-quota", Usage: "CPU CFS quota (us)"},
		&cli.StringFlag{Name: "cpu-share", Usage: "CPU shares"},
		&cli.StringFlag{Name: "cpu-rt-period", Usage: "CPU realtime period (us)"},
		&cli.StringFlag{Name: "cpu-rt-runtime", Usage: "CPU realtime runtime (us)"},
		&cli.StringFlag{Name: "cpuset-cpus", Usage: "CPUs to use"},
		&cli.StringFlag{Name: "cpuset-mems", Usage: "memory nodes to use"},
		&cli.StringFlag{Name: "memory", Usage: "memory limit (bytes, k/m/g suffixes)"},
		&cli.StringFlag{Name: "memory-reservation", Usage: "memory soft limit"},
		&cli.StringFlag{Name: "memory-swap", Usage: "memory+swap limit (-1 unlimited)"},
		&cli.StringFlag{Name: "kernel-memory", Usage: "deprecated, refused"},
		&cli.StringFlag{Name: "kernel-memory-tcp", Usage: "deprecated, refused"},
		&cli.IntFlag{Name: "pids-limit", Usage: "maximum number of pids (-1 unlimited)"},
		&cli.StringFlag{Name: "l3-cache-schema", Usage: "Intel RDT (not supported)"},
		&cli.StringFlag{Name: "mem-bw-schema", Usage: "Intel RDT (not supported)"},
	},
	Action: func(ctx *cli.Context) error {
		if err := checkArgs(ctx, 1); err != nil {
			return err
		}
		c, err := loadContainer(ctx)
		if err != nil {
			return err
		}
		r, err := updateResources(ctx)
		if err != nil {
			return err
		}
		return c.Update(r)
	},
}

// updateResources builds the resources to apply from --resources or the
// flags (runc's semantics: a file replaces the flags).
func updateResources(ctx *cli.Context) (*specs.LinuxResources, error) {
	var r specs.LinuxResources
	if path := ctx.String("resources"); path != "" {
		var in io.Reader = os.Stdin
		if path != "-" {
			f, err := os.Open(path)
			if err != nil {
				return nil, fmt.Errorf("open resources file: %w", err)
			}
			defer f.Close()
			in = f
		}
		if err := json.NewDecoder(in).Decode(&r); err != nil {
			return nil, fmt.Errorf("decode resources: %w", err)
		}
		return &r, nil
	}
	for _, n := range []string{"kernel-memory", "kernel-memory-tcp", "l3-cache-schema", "mem-bw-schema"} {
		if ctx.IsSet(n) {
			return nil, fmt.Errorf("--%s: not supported", n)
		}
	}
	u64 := func(name string, dst **uint64) error {
		if !ctx.IsSet(name) {
			return nil
		}
		v, err := strconv.ParseUint(ctx.String(name), 10, 64)
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		*dst = &v
		return nil
	}
	i64 := func(name string, dst **int64) error {
		if !ctx.IsSet(name) {
			return nil
		}
		v, err := strconv.ParseInt(ctx.String(name), 10, 64)
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		*dst = &v
		return nil
	}
	bytes := func(name string, dst **int64) error {
		if !ctx.IsSet(name) {
			return nil
		}
		s := ctx.String(name)
		var v int64
		if s == "-1" {
			v = -1
		} else {
			var err error
			if v, err = units.RAMInBytes(s); err != nil {
				return fmt.Errorf("--%s: %w", name, err)
			}
		}
		*dst = &v
		return nil
	}
	cpu := &specs.LinuxCPU{}
	mem := &specs.LinuxMemory{}
	for _, f := range []func() error{
		func() error { return u64("cpu-period", &cpu.Period) },
		func() error { return i64("cpu-quota", &cpu.Quota) },
		func() error { return u64("cpu-share", &cpu.Shares) },
		func() error { return u64("cpu-rt-period", &cpu.RealtimePeriod) },
		func() error { return i64("cpu-rt-runtime", &cpu.RealtimeRuntime) },
		func() error { return bytes("memory", &mem.Limit) },
		func() error { return bytes("memory-reservation", &mem.Reservation) },
		func() error { return bytes("memory-swap", &mem.Swap) },
	} {
		if err := f(); err != nil {
			return nil, err
		}
	}
	cpu.Cpus, cpu.Mems = ctx.String("cpuset-cpus"), ctx.String("cpuset-mems")
	if *cpu != (specs.LinuxCPU{}) {
		r.CPU = cpu
	}
	if *mem != (specs.LinuxMemory{}) {
		r.Memory = mem
	}
	if ctx.IsSet("blkio-weight") {
		w, err := strconv.ParseUint(ctx.String("blkio-weight"), 10, 16)
		if err != nil {
			return nil, fmt.Errorf("--blkio-weight: %w", err)
		}
		w16 := uint16(w)
		r.BlockIO = &specs.LinuxBlockIO{Weight: &w16}
	}
	if ctx.IsSet("pids-limit") {
		p := int64(ctx.Int("pids-limit"))
		r.Pids = &specs.LinuxPids{Limit: &p}
	}
	return &r, nil
}
