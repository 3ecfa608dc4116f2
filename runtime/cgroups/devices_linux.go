package cgroups

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setDevicesV2 enforces the device rules on a v2 cgroup: it attaches a
// BPF_CGROUP_DEVICE program built from the rules (deviceFilter), then detaches every
// device program attached before, so that an update replaces the rules
// (the new program is in place before the old one goes: no window without
// a filter).
func setDevicesV2(dir string, devs []specs.LinuxDeviceCgroup) error {
	insts, err := deviceFilter(devs)
	if err != nil {
		return fmt.Errorf("device filter for cgroup %s: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	defer unix.Close(fd)

	var old []ebpf.ProgramID
	q, err := link.QueryPrograms(link.QueryOptions{Target: fd, Attach: ebpf.AttachCGroupDevice})
	if err != nil {
		return fmt.Errorf("query device programs of cgroup %s: %w", dir, err)
	}
	for _, p := range q.Programs {
		old = append(old, p.ID)
	}

	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.CGroupDevice,
		Instructions: insts,
		License:      "Apache-2.0",
	})
	if err != nil {
		return fmt.Errorf("load device program for cgroup %s: %w", dir, err)
	}
	defer prog.Close()
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  fd,
		Program: prog,
		Attach:  ebpf.AttachCGroupDevice,
		Flags:   unix.BPF_F_ALLOW_MULTI,
	}); err != nil {
		return fmt.Errorf("attach device program to cgroup %s: %w", dir, err)
	}
	var errs []error
	for _, id := range old {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			errs = append(errs, fmt.Errorf("device program %d of cgroup %s: %w", id, dir, err))
			continue
		}
		err = link.RawDetachProgram(link.RawDetachProgramOptions{Target: fd, Program: p, Attach: ebpf.AttachCGroupDevice})
		p.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("detach device program %d from cgroup %s: %w", id, dir, err))
		}
	}
	return errors.Join(errs...)
}
