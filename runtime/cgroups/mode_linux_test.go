package cgroups

import (
	"bufio"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

func TestHierarchiesFromMounts(t *testing.T) {
	v1 := func(mp, opts string) *mountinfo.Info {
		return &mountinfo.Info{FSType: "cgroup", Mountpoint: mp, VFSOptions: opts}
	}
	v2 := func(mp string) *mountinfo.Info {
		return &mountinfo.Info{FSType: "cgroup2", Mountpoint: mp, VFSOptions: "rw"}
	}

	h, err := hierarchiesFromMounts([]*mountinfo.Info{
		v1("/sys/fs/cgroup/cpu,cpuacct", "rw,cpu,cpuacct"),
		v1("/sys/fs/cgroup/freezer", "rw,freezer"),
		v1("/sys/fs/cgroup/systemd", "rw,xattr,name=systemd"),
		v2("/sys/fs/cgroup/unified"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.mode != Hybrid || h.v2 != "/sys/fs/cgroup/unified" || h.v1["cpuacct"] != "/sys/fs/cgroup/cpu,cpuacct" ||
		h.v1["freezer"] != "/sys/fs/cgroup/freezer" || len(h.v1) != 3 {
		t.Fatalf("hybrid: got %+v", h)
	}
	h, _ = hierarchiesFromMounts([]*mountinfo.Info{v2("/sys/fs/cgroup")})
	if h.mode != Unified || len(h.v1) != 0 {
		t.Fatalf("unified: got %+v", h)
	}
	h, _ = hierarchiesFromMounts([]*mountinfo.Info{v1("/sys/fs/cgroup/memory", "rw,memory")})
	if h.mode != Legacy || h.v2 != "" {
		t.Fatalf("legacy: got %+v", h)
	}
	if _, err := hierarchiesFromMounts(nil); err == nil {
		t.Fatal("no mounts: want an error")
	}
}

func TestParseProcCgroup(t *testing.T) {
	const in = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/user.slice\n"
	for _, c := range []struct{ ctrl, want string }{{"memory", "/process_api/abc"}, {"cpuacct", "/x"}, {"", "/user.slice"}} {
		got, err := parseProcCgroup(bufio.NewScanner(strings.NewReader(in)), c.ctrl)
		if err != nil || got != c.want {
			t.Errorf("%q: got %q %v, want %q", c.ctrl, got, err, c.want)
		}
	}
	if _, err := parseProcCgroup(bufio.NewScanner(strings.NewReader(in)), "pids"); err == nil {
		t.Error("missing controller: want an error")
	}
}

func TestV2State(t *testing.T) {
	for _, c := range []struct {
		freeze string
		ev     string
		want   FreezerState
	}{
		{"0", "populated 1\nfrozen 0\n", Thawed},
		{"1", "populated 1\nfrozen 0\n", Freezing},
		{"1", "populated 1\nfrozen 1\n", Frozen},
	} {
		if got := v2State(c.freeze, parseKeyed(c.ev)); got != c.want {
			t.Errorf("%s %q: got %s, want %s", c.freeze, c.ev, got, c.want)
		}
	}
}
