package runtime

import (
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/engine"
)

// Status is a container's lifecycle state. The transitions are
//
//	creating -> created -> running <-> paused
//	    \          \          \
//	     `----------`----------`--> stopped -> (deleted)
//
// creating, created and running are recorded in the state dir; paused is read
// from the cgroup freezer and stopped from the init process being gone.
type Status string

// The states of the OCI runtime specification, plus paused (as runc).
const (
	Creating Status = "creating"
	Created  Status = "created"
	Running  Status = "running"
	Paused   Status = "paused"
	Stopped  Status = "stopped"
)

// State is the state of a container as `cryo state` prints it: the OCI state
// plus runc's rootfs, created and owner fields.
type State struct {
	specs.State
	Rootfs  string    `json:"rootfs"`
	Created time.Time `json:"created"`
	Owner   string    `json:"owner"`
}

// record is what the state dir keeps about a container (state.json).
type record struct {
	ID           string      `json:"id"`
	Bundle       string      `json:"bundle"`
	Rootfs       string      `json:"rootfs"`
	Pid          int         `json:"pid"`
	PidStartTime uint64      `json:"pid_start_time"`
	Status       Status      `json:"status"`
	Created      time.Time   `json:"created"`
	CgroupPath   string      `json:"cgroup_path"`
	NoPivot      bool        `json:"no_pivot,omitempty"`
	NoNewKeyring bool        `json:"no_new_keyring,omitempty"`
	Spec         *specs.Spec `json:"spec"`
	// Stdio names the init's stdio files (engine.DumpOptions.Stdio).
	Stdio [3]engine.FileID `json:"stdio,omitempty"`
}
