package shim

import (
	"errors"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cryo-run/cryo/runtime"
)

func TestCheckpointOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    any // nil: no options
		want    runtime.CheckpointOpts
		wantErr error
	}{
		{name: "none", want: runtime.CheckpointOpts{ImagePath: "/ck", LeaveRunning: true}},
		{name: "leave running", opts: &options.CheckpointOptions{}, want: runtime.CheckpointOpts{ImagePath: "/ck", LeaveRunning: true}},
		{
			name: "all runc flags",
			opts: &options.CheckpointOptions{Exit: true, OpenTcp: true, ExternalUnixSockets: true, Terminal: true, FileLocks: true,
				WorkPath: "/w", ParentPath: "/p", ImagePath: "/img", CgroupsMode: "soft"},
			want: runtime.CheckpointOpts{ImagePath: "/img", WorkPath: "/w", ParentPath: "/p",
				TCPEstablished: true, ExtUnixSockets: true, ShellJob: true, FileLocks: true},
		},
		{name: "empty namespaces", opts: &options.CheckpointOptions{EmptyNamespaces: []string{"network"}}, wantErr: errdefs.ErrNotImplemented},
		{name: "strict cgroups", opts: &options.CheckpointOptions{CgroupsMode: "strict"}, wantErr: errdefs.ErrNotImplemented},
		{name: "wrong type", opts: &specs.LinuxResources{}, wantErr: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &taskAPI.CheckpointTaskRequest{ID: "c", Path: "/ck"}
			if tc.opts != nil {
				a, err := typeurl.MarshalAnyToProto(tc.opts)
				if err != nil {
					t.Fatal(err)
				}
				r.Options = a
			}
			got, err := checkpointOptions(r)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseStdioURI(t *testing.T) {
	for _, tc := range []struct {
		in, scheme, path string
		bad              bool
	}{
		{in: ""},
		{in: "/run/fifo/x-stdout", scheme: "fifo", path: "/run/fifo/x-stdout"},
		{in: "file:///var/log/c.log", scheme: "file", path: "/var/log/c.log"},
		{in: "binary:///usr/bin/logger?a=b", scheme: "binary", path: "/usr/bin/logger"},
		{in: "http://example.com/x", bad: true},
	} {
		u, err := parseStdioURI(tc.in)
		if tc.bad {
			if !errors.Is(err, errInvalid) {
				t.Errorf("%q: got error %v, want invalid", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if tc.in == "" {
			if u != nil {
				t.Errorf("empty: got %v, want nil", u)
			}
			continue
		}
		if u.Scheme != tc.scheme || u.Path != tc.path {
			t.Errorf("%q: got %s %s, want %s %s", tc.in, u.Scheme, u.Path, tc.scheme, tc.path)
		}
	}
}
