package oci

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Config is the checkpoint's config blob (MediaTypeConfig): what the image
// is, where and when it was taken, and a summary of what it holds, for restore
// checks and `cryo inspect`. The engine's own records (state layer) are the
// authority for restore; Config only summarises them.
type Config struct {
	// FormatRevision is the checkpoint format revision (FormatRevision).
	FormatRevision int `json:"formatRevision"`
	// EngineVersion is the version of the engine (and cryo) that dumped.
	EngineVersion string `json:"engineVersion,omitempty"`
	// Created is when the checkpoint was taken.
	Created time.Time `json:"created"`
	// Name is the checkpoint's name (also AnnotationName).
	Name string `json:"name,omitempty"`
	// ContainerID is the checkpointed container (also AnnotationContainer).
	ContainerID string `json:"containerID"`
	// Host describes the machine the checkpoint was taken on.
	Host Host `json:"host"`
	// Time holds the clocks at the checkpoint, so restore can compute
	// time namespace offsets.
	Time Clocks `json:"time"`
	// Spec is the container's OCI runtime spec.
	Spec *specs.Spec `json:"spec,omitempty"`
	// Processes summarises the checkpointed process tree, root first.
	Processes []Process `json:"processes,omitempty"`
	// Parent is the manifest digest of the parent checkpoint of an
	// incremental checkpoint (empty for a full one). WriteCheckpoint sets it.
	Parent digest.Digest `json:"parent,omitempty"`
	// Engine holds free-form summary fields of the engine (page bytes,
	// dump durations, options used...), shown by inspect.
	Engine map[string]string `json:"engine,omitempty"`
}

// Host describes a machine: what a restore compares against its own.
type Host struct {
	// Kernel is the kernel release (uname -r).
	Kernel string `json:"kernel"`
	// Arch is the Go architecture name (amd64, arm64...).
	Arch string `json:"arch"`
	// CPUFeatures are the CPU feature flags of /proc/cpuinfo, sorted.
	CPUFeatures []string `json:"cpuFeatures,omitempty"`
}

// Clocks are the clocks read at the checkpoint (nanoseconds).
type Clocks struct {
	// Realtime is the wall clock.
	Realtime time.Time `json:"realtime"`
	// Monotonic is CLOCK_MONOTONIC in nanoseconds.
	Monotonic int64 `json:"monotonic"`
	// Boottime is CLOCK_BOOTTIME in nanoseconds.
	Boottime int64 `json:"boottime"`
}

// Process summarises one checkpointed process.
type Process struct {
	Pid      int      `json:"pid"`  // in the container's PID namespace
	PPid     int      `json:"ppid"` // in the container's PID namespace
	Comm     string   `json:"comm"`
	Args     []string `json:"args,omitempty"`
	UID      uint32   `json:"uid"`
	GID      uint32   `json:"gid"`
	Cwd      string   `json:"cwd,omitempty"`
	Threads  int      `json:"threads"`
	MemBytes uint64   `json:"memBytes"` // bytes of memory saved
	Files    []string `json:"files,omitempty"`
	Sockets  []string `json:"sockets,omitempty"`
}

// maxConfigSize bounds the config blob a reader accepts.
const maxConfigSize = 16 << 20

// parseConfig decodes and checks a config blob: one JSON object, a format
// revision this version reads, a container id and a creation time.
func parseConfig(b []byte) (*Config, error) {
	if len(b) > maxConfigSize {
		return nil, fmt.Errorf("%w: config of %d bytes exceeds %d", ErrInvalidImage, len(b), maxConfigSize)
	}
	var c Config
	if err := decodeStrictJSON(b, &c); err != nil {
		return nil, fmt.Errorf("%w: config: %w", ErrInvalidImage, err)
	}
	switch {
	case c.FormatRevision < 1:
		return nil, fmt.Errorf("%w: config: format revision %d", ErrInvalidImage, c.FormatRevision)
	case c.FormatRevision > FormatRevision:
		return nil, fmt.Errorf("%w: format revision %d (this version reads up to %d)", ErrUnsupported, c.FormatRevision, FormatRevision)
	case c.ContainerID == "":
		return nil, fmt.Errorf("%w: config: no container id", ErrInvalidImage)
	case c.Created.IsZero():
		return nil, fmt.Errorf("%w: config: no creation time", ErrInvalidImage)
	}
	if c.Parent != "" {
		if err := checkDigest(c.Parent); err != nil {
			return nil, fmt.Errorf("config parent: %w", err)
		}
	}
	return &c, nil
}

// decodeStrictJSON decodes exactly one JSON value (an object) from b.
func decodeStrictJSON(b []byte, v any) error {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after JSON object")
	}
	return nil
}

// HostInfo describes this machine: kernel release, architecture and CPU
// features. It reads /proc; elsewhere than Linux it returns an error.
func HostInfo() (Host, error) {
	rel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return Host{}, fmt.Errorf("read kernel release: %w", err)
	}
	feats, err := HostCPUFeatures()
	if err != nil {
		return Host{}, err
	}
	return Host{Kernel: strings.TrimSpace(string(rel)), Arch: runtime.GOARCH, CPUFeatures: feats}, nil
}

// HostCPUFeatures returns the CPU feature flags of this machine from
// /proc/cpuinfo, sorted and deduplicated.
func HostCPUFeatures() ([]string, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return nil, fmt.Errorf("read cpu features: %w", err)
	}
	defer f.Close()
	feats, err := ParseCPUFeatures(f)
	if err != nil {
		return nil, fmt.Errorf("read cpu features: %w", err)
	}
	return feats, nil
}

// ParseCPUFeatures extracts the feature flags from /proc/cpuinfo text: the
// "flags" line on x86, "Features" on arm64 and others. The flags common to
// every processor listed are returned (a feature that one core lacks is not
// one a process can count on), sorted.
func ParseCPUFeatures(r io.Reader) ([]string, error) {
	var common map[string]bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key = strings.TrimSpace(key)
		if key != "flags" && key != "Features" {
			continue
		}
		cur := map[string]bool{}
		for _, f := range strings.Fields(val) {
			cur[f] = true
		}
		if common == nil {
			common = cur
			continue
		}
		for f := range common {
			if !cur[f] {
				delete(common, f)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if common == nil {
		return nil, errors.New("no flags or Features line in cpuinfo")
	}
	out := make([]string, 0, len(common))
	for f := range common {
		out = append(out, f)
	}
	slices.Sort(out)
	return out, nil
}

// bookkeepingCPUFlags are /proc/cpuinfo flags that describe the kernel's or
// the hypervisor's view of the machine (timers, mitigations, topology), not
// instructions a process can execute: a restore does not need them.
var bookkeepingCPUFlags = map[string]bool{
	"hypervisor": true, "constant_tsc": true, "nonstop_tsc": true, "tsc_reliable": true,
	"tsc_known_freq": true, "tsc_deadline_timer": true, "rep_good": true, "nopl": true,
	"xtopology": true, "cpuid": true, "pti": true, "arat": true, "extd_apicid": true,
	"cr8_legacy": true, "vmmcall": true, "x2apic": true, "apic": true, "ht": true,
	"tsc_adjust": true, "art": true, "arch_perfmon": true, "pebs": true, "bts": true,
	"aperfmperf": true, "nonstop_tsc_s3": true, "cpuid_fault": true, "epb": true,
	"ibrs": true, "ibpb": true, "stibp": true, "ssbd": true, "ibrs_enhanced": true,
	"flush_l1d": true, "md_clear": true, "arch_capabilities": true,
	"tpr_shadow": true, "vnmi": true, "flexpriority": true, "ept": true, "vpid": true,
	"ept_ad": true, "dtherm": true, "ida": true, "pln": true, "pts": true, "hwp": true,
	"hwp_notify": true, "hwp_act_window": true, "hwp_epp": true, "hwp_pkg_req": true,
	"amd_lbr_v2": true, "perfctr_core": true, "perfctr_nb": true, "perfctr_llc": true,
	"mwaitx": true, "cpb": true, "hw_pstate": true, "decodeassists": true, "pausefilter": true,
	"pfthreshold": true, "v_vmsave_vmload": true, "vgif": true, "v_spec_ctrl": true,
	"npt": true, "lbrv": true, "svm_lock": true, "nrip_save": true, "tsc_scale": true,
	"vmcb_clean": true, "flushbyasid": true, "avic": true, "overflow_recov": true,
	"succor": true, "smca": true, "dca": true, "pdcm": true, "xtpr": true,
	"tm": true, "tm2": true, "est": true, "acpi": true, "pbe": true, "ds_cpl": true,
	"dtes64": true, "monitor": true, "vmx": true, "smx": true, "svm": true, "skinit": true,
	"wdt": true, "ibs": true, "osvw": true, "pat": true, "mtrr": true, "mce": true,
	"mca": true, "pge": true, "pse36": true, "pae": true, "vme": true, "de": true, "pse": true,
	"msr": true, "cpufreq": true, "rdt_a": true, "cqm": true, "cat_l3": true,
	"cdp_l3": true, "mba": true, "pti_kpti": true, "topoext": true,
}

// MissingCPUFeatures returns, sorted, the CPU features of an image (Host.
// CPUFeatures at dump) that the host lacks and that a restored process could
// depend on (flags that only describe the kernel's or hypervisor's view,
// like "hypervisor" or "constant_tsc", are ignored). Empty means the host can
// run what the image's processes may have chosen to use (glibc and Go pick
// instruction sets at start-up, so a missing feature means SIGILL later).
func MissingCPUFeatures(image, host []string) []string {
	have := make(map[string]bool, len(host))
	for _, f := range host {
		have[f] = true
	}
	var missing []string
	for _, f := range image {
		if !have[f] && !bookkeepingCPUFlags[f] {
			missing = append(missing, f)
		}
	}
	slices.Sort(missing)
	return slices.Compact(missing)
}
