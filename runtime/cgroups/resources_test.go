package cgroups

import (
	"errors"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCPUSharesToWeight(t *testing.T) {
	for _, c := range []struct{ shares, want uint64 }{
		{0, 0}, {1, 1}, {2, 1}, {1024, 39}, {262144, 10000}, {1 << 20, 10000},
	} {
		if got := CPUSharesToWeight(c.shares); got != c.want {
			t.Errorf("shares %d: got %d, want %d", c.shares, got, c.want)
		}
	}
}

func TestBlkioWeightToIOWeight(t *testing.T) {
	for _, c := range []struct{ w, want uint64 }{{0, 0}, {10, 1}, {500, 4950}, {1000, 10000}} {
		if got := BlkioWeightToIOWeight(c.w); got != c.want {
			t.Errorf("weight %d: got %d, want %d", c.w, got, c.want)
		}
	}
}

func TestCPUMaxValue(t *testing.T) {
	for _, c := range []struct {
		quota  *int64
		period *uint64
		want   string
	}{
		{nil, nil, ""},
		{i64(50000), u64(100000), "50000 100000"},
		{i64(-1), u64(100000), "max 100000"},
		{i64(20000), nil, "20000"},
		{nil, u64(250000), "max 250000"},
	} {
		if got := cpuMaxValue(c.quota, c.period); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestV2MemoryValues(t *testing.T) {
	got, err := v2MemoryValues(&specs.LinuxMemory{Limit: i64(100), Swap: i64(300), Reservation: i64(50)})
	if err != nil {
		t.Fatal(err)
	}
	want := []kv{{"memory.swap.max", "200"}, {"memory.max", "100"}, {"memory.low", "50"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	got, _ = v2MemoryValues(&specs.LinuxMemory{Limit: i64(-1), Swap: i64(-1)})
	if want := []kv{{"memory.swap.max", "max"}, {"memory.max", "max"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("unlimited: got %v, want %v", got, want)
	}
	for _, m := range []*specs.LinuxMemory{
		{Limit: i64(100), Swap: i64(50)}, // swap below limit
		{Swap: i64(50)},                  // swap without limit
	} {
		if _, err := v2MemoryValues(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", m, err)
		}
	}
	if _, err := v2MemoryValues(&specs.LinuxMemory{Swappiness: u64(10)}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("swappiness on v2: got %v, want ErrUnsupported", err)
	}
}

func TestV2CPUValues(t *testing.T) {
	got, err := v2CPUValues(&specs.LinuxCPU{Shares: u64(1024), Quota: i64(50000), Period: u64(100000), Idle: i64(1)})
	if err != nil {
		t.Fatal(err)
	}
	want := []kv{{"cpu.weight", "39"}, {"cpu.max", "50000 100000"}, {"cpu.idle", "1"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := v2CPUValues(&specs.LinuxCPU{RealtimeRuntime: i64(1000)}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("realtime on v2: got %v, want ErrUnsupported", err)
	}
}

func TestIOValues(t *testing.T) {
	dev := func(maj, min int64, rate uint64) specs.LinuxThrottleDevice {
		return specs.LinuxThrottleDevice{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: maj, Minor: min}, Rate: rate}
	}
	b := &specs.LinuxBlockIO{
		Weight:                  u16(500),
		ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{dev(8, 16, 2048), dev(8, 0, 1024)},
		ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{dev(8, 0, 10)},
	}
	got, err := v2IOValues(b, "io.weight")
	if err != nil {
		t.Fatal(err)
	}
	want := []kv{{"io.weight", "default 4950"}, {"io.max", "8:0 rbps=1024 wiops=10"}, {"io.max", "8:16 rbps=2048"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("v2: got %v, want %v", got, want)
	}
	got, _ = v2IOValues(b, "io.bfq.weight")
	if got[0] != (kv{"io.bfq.weight", "default 500"}) {
		t.Fatalf("bfq: got %v", got[0])
	}
	got, err = v1BlkioValues(b, "blkio.bfq.weight")
	if err != nil {
		t.Fatal(err)
	}
	want = []kv{{"blkio.bfq.weight", "500"}, {"blkio.throttle.read_bps_device", "8:16 2048"},
		{"blkio.throttle.read_bps_device", "8:0 1024"}, {"blkio.throttle.write_iops_device", "8:0 10"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("v1: got %v, want %v", got, want)
	}
	if _, err := v1BlkioValues(b, ""); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("weight without a weight file: got %v, want ErrUnsupported", err)
	}
}

func TestV1DeviceValues(t *testing.T) {
	got, err := v1DeviceValues([]specs.LinuxDeviceCgroup{
		{Allow: true, Type: "c", Major: i64(1), Minor: i64(3), Access: "rwm"},
		{Allow: false, Type: "b", Major: i64(8), Access: "w"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []kv{{"devices.deny", "a *:* rwm"}, {"devices.allow", "c 1:3 rwm"}, {"devices.deny", "b 8:* w"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	got, _ = v1DeviceValues([]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: i64(5), Minor: i64(1)}})
	want = []kv{{"devices.deny", "a *:* rwm"}, {"devices.allow", "c 5:1 rwm"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("leading deny-all: got %v, want %v", got, want)
	}
	if _, err := v1DeviceRule(specs.LinuxDeviceCgroup{Type: "c", Access: "rx"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad access: got %v", err)
	}
}

func TestHugetlbValues(t *testing.T) {
	lim, rsvd, err := hugetlbValues([]specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if lim[0] != (kv{"hugetlb.2MB.max", "4194304"}) || rsvd[0] != (kv{"hugetlb.2MB.rsvd.max", "4194304"}) {
		t.Fatalf("got %v %v", lim, rsvd)
	}
	lim, _, _ = hugetlbValues([]specs.LinuxHugepageLimit{{Pagesize: "1GB", Limit: 1 << 30}}, false)
	if lim[0].file != "hugetlb.1GB.limit_in_bytes" {
		t.Fatalf("v1: got %v", lim)
	}
	for _, ps := range []string{"", "MB", "2mb", "2 MB", "x2MB"} {
		if _, _, err := hugetlbValues([]specs.LinuxHugepageLimit{{Pagesize: ps}}, true); !errors.Is(err, ErrInvalid) {
			t.Errorf("page size %q: got %v, want ErrInvalid", ps, err)
		}
	}
}

func TestUnifiedValues(t *testing.T) {
	got, err := unifiedValues(map[string]string{"memory.high": "1G", "cpu.weight": "100"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []kv{{"cpu.weight", "100"}, {"memory.high", "1G"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, k := range []string{"../x.max", "cgroup.procs", "cgroup.kill", "noprefix", ""} {
		if _, err := unifiedValues(map[string]string{k: "1"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("key %q: got %v, want ErrInvalid", k, err)
		}
	}
}

func TestPidsValue(t *testing.T) {
	for _, c := range []struct {
		in   int64
		want string
	}{{-1, "max"}, {0, "max"}, {100, "100"}} {
		if got := pidsValue(c.in); got != c.want {
			t.Errorf("%d: got %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for _, c := range []struct {
		in, base, want string
		err            error
	}{
		{"/default/abc", "/ignored", "/default/abc", nil},
		{"/a//b/", "", "/a/b", nil},
		{"rel/x", "/user.slice/s.scope", "/user.slice/s.scope/rel/x", nil},
		{"", "/", "", ErrInvalid},
		{"/", "/", "", ErrInvalid},
		{"/a/../../etc", "/", "", ErrInvalid},
	} {
		got, err := cleanPath(c.in, c.base)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("%q: got %q %v, want %q %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestRdmaAndNetwork(t *testing.T) {
	h, o := uint32(3), uint32(10)
	got := rdmaValues(map[string]specs.LinuxRdma{"mlx5_1": {HcaObjects: &o}, "mlx5_0": {HcaHandles: &h, HcaObjects: &o}})
	want := []kv{{"rdma.max", "mlx5_0 hca_handle=3 hca_object=10"}, {"rdma.max", "mlx5_1 hca_object=10"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	cls, prio := v1NetworkValues(&specs.LinuxNetwork{ClassID: &h, Priorities: []specs.LinuxInterfacePriority{{Name: "eth0", Priority: 5}}})
	if cls[0] != (kv{"net_cls.classid", "3"}) || prio[0] != (kv{"net_prio.ifpriomap", "eth0 5"}) {
		t.Fatalf("got %v %v", cls, prio)
	}
}
