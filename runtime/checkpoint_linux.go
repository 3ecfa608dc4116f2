package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/engine"
	"github.com/cryo-run/cryo/oci"
)

// Version is the cryo version recorded in checkpoint images (set by main).
var Version = "dev"

// CheckpointOpts are runc's checkpoint options.
type CheckpointOpts struct {
	// ImagePath is the OCI layout directory the checkpoint is written to
	// (created; it must not hold an image already).
	ImagePath string
	// Archive, if set, also writes the layout as one tar file.
	Archive string
	// WorkPath holds the engine's scratch files (default: a private
	// directory next to ImagePath, removed afterwards).
	WorkPath string
	// ParentPath is a previous checkpoint of this container: the new image
	// is incremental on top of it.
	ParentPath string
	// Name is the checkpoint's name (default: the container id).
	Name string
	// LeaveRunning keeps the container running after the checkpoint; by
	// default it is stopped and deleted once the image is safely written.
	LeaveRunning bool
	// PreCopy copies the container's memory while it runs before stopping
	// it for the rest (engine.DumpOptions.PreCopy): the default with
	// LeaveRunning; without it, it shortens the downtime of a migration
	// (the time from the stop to the kill) at the cost of a longer
	// checkpoint. It cannot be combined with ParentPath.
	PreCopy bool
	// NoPreCopy stops a LeaveRunning container for the whole dump instead of
	// copying its memory while it runs first: one longer stall, for
	// workloads that rewrite most of their memory faster than it can be
	// copied.
	NoPreCopy bool
	// TCPEstablished, ExtUnixSockets, ShellJob and FileLocks allow what runc's
	// flags of the same name allow.
	TCPEstablished, ExtUnixSockets, ShellJob, FileLocks bool
}

// Checkpoint saves the container's whole process tree into an OCI image
// layout at opts.ImagePath. A failed checkpoint leaves the container as it
// was (running or paused, untraced). Without LeaveRunning the container is
// killed only after the image has been written, and then deleted.
func (c *Container) Checkpoint(ctx context.Context, opts CheckpointOpts) (_ *oci.WriteResult, retErr error) {
	if opts.ImagePath == "" {
		return nil, fmt.Errorf("checkpoint of %s: image path is required: %w", c.rec.ID, ErrInvalidConfig)
	}
	unlock, err := c.lock()
	if err != nil {
		return nil, err
	}
	st, err := c.Status()
	if err != nil {
		unlock()
		return nil, err
	}
	if st != Running && st != Paused {
		unlock()
		return nil, withMessage(ErrNotRunning, "cannot checkpoint container %s: it is %s", c.rec.ID, st)
	}
	cg, err := c.Cgroup()
	if err != nil {
		unlock()
		return nil, err
	}
	image, err := filepath.Abs(opts.ImagePath)
	if err != nil {
		unlock()
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(image, "index.json")); err == nil {
		unlock()
		return nil, fmt.Errorf("checkpoint of %s: %s already holds an image: %w", c.rec.ID, image, ErrExist)
	}
	work, cleanup, err := workDir(opts.WorkPath, filepath.Dir(image), "cryo-dump-")
	if err != nil {
		unlock()
		return nil, err
	}
	defer cleanup()
	clocks, err := c.clocks()
	if err != nil {
		unlock()
		return nil, err
	}
	cfg := &oci.Config{
		FormatRevision: oci.FormatRevision, EngineVersion: Version, Created: time.Now().UTC(),
		Name: opts.Name, ContainerID: c.rec.ID, Spec: c.rec.Spec, Time: clocks,
	}
	if cfg.Host, err = oci.HostInfo(); err != nil {
		unlock()
		return nil, err
	}
	// The blobs written are recorded as verified (root only): a restore on
	// this host need not hash them again. The engine's pages files are
	// moved into the layout, so that removing the work directory leaves
	// the blobs' identity (ctime) as recorded.
	wopts := oci.WriteOptions{Name: opts.Name, Parent: opts.ParentPath, MovePages: true, Cache: c.rt.verifyCache()}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		wopts.Owner = &oci.Owner{UID: uid, GID: gid}
	}
	var written *oci.WriteResult
	var packTime time.Duration
	pack := func(res *engine.DumpResult) error {
		defer func(start time.Time) { packTime = time.Since(start); timePhase(ctx, "pack", start) }(time.Now())
		cfg.Processes = processSummary(res)
		if res.Monotonic != 0 {
			// The clocks of the moment the image holds (the end of a
			// pre-copy, not the start of the checkpoint).
			cfg.Time = oci.Clocks{Realtime: res.StoppedAt, Monotonic: res.Monotonic, Boottime: res.Boottime}
		}
		cfg.Engine = map[string]string{
			"pageBytes": strconv.FormatUint(res.PageBytes, 10),
			"kernel":    res.Kernel,
		}
		wo := wopts
		if len(res.PageDigests) > 0 {
			// Computed while the pages were copied: packing links the
			// files without reading them again (a restore verifies them).
			wo.Digests = map[string]digest.Digest{}
			for name, d := range res.PageDigests {
				wo.Digests[name] = digest.Digest(d)
			}
		}
		w, err := oci.WriteCheckpoint(image, filepath.Join(work, "engine"), cfg, wo)
		if err != nil {
			return fmt.Errorf("write checkpoint image %s: %w", image, err)
		}
		if opts.Archive != "" {
			if err := oci.WriteArchive(image, opts.Archive); err != nil {
				return fmt.Errorf("write checkpoint archive %s: %w", opts.Archive, err)
			}
		}
		written = w
		return nil
	}
	dopts := engine.DumpOptions{
		Pid: c.rec.Pid, Freezer: cg,
		ImageDir: filepath.Join(work, "engine"), LeaveRunning: opts.LeaveRunning,
		TCPEstablished: opts.TCPEstablished, ExtUnixSockets: opts.ExtUnixSockets,
		ShellJob: opts.ShellJob, FileLocks: opts.FileLocks, Stdio: c.rec.Stdio,
		// A container left running is stopped only for what changed while
		// its memory was copied (engine/precopy_linux.go).
		PreCopy: (opts.PreCopy || opts.LeaveRunning && opts.ParentPath == "") && !opts.NoPreCopy,
	}
	if opts.ParentPath != "" {
		// The engine reads the parent's records (and, where no dirty-page
		// tracker tells what changed, its pages) from the parent laid out as
		// a restore would find it; the packer then lists the parent's layers.
		dopts.Parent = filepath.Join(work, "parent")
		files, err := extractParent(opts.ParentPath, dopts.Parent)
		if err != nil {
			unlock()
			return nil, fmt.Errorf("checkpoint of %s: parent checkpoint %s: %w", c.rec.ID, opts.ParentPath, err)
		}
		defer closeFiles(files)
		dopts.ParentFiles = files
	}
	if !opts.LeaveRunning {
		// Write the image while the tree is still stopped: the container is
		// killed only once its image is safe. The page digests are computed
		// during the copy, on the other core. With LeaveRunning the stall
		// is what counts: packing hashes them after the tree runs again.
		dopts.Commit = pack
		dopts.HashPages = true
	}
	dumpStart := time.Now()
	res, err := engine.Dump(ctx, dopts)
	if err == nil {
		// The engine's own time (the stall, with LeaveRunning), without
		// the packing done inside Dump otherwise.
		reportPhase(ctx, "dump", time.Since(dumpStart)-packTime)
		reportPhase(ctx, "stopped", res.Stopped)
	}
	if st == Paused {
		// The engine thaws to collect the ptrace stops; a paused container
		// stays paused.
		if ferr := cg.Freeze(); ferr != nil && err == nil && opts.LeaveRunning {
			err = fmt.Errorf("re-pause %s after checkpoint: %w", c.rec.ID, ferr)
		}
	}
	if err != nil {
		unlock()
		return nil, fmt.Errorf("checkpoint of container %s: %w", c.rec.ID, err)
	}
	if opts.LeaveRunning {
		// The tree runs again already: pack after the stall, not during it.
		if err := pack(res); err != nil {
			unlock()
			return nil, err
		}
		unlock()
		return written, nil
	}
	unlock()
	if err := c.Delete(ctx, true); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.rec.ID).Warn("delete container after checkpoint")
	}
	return written, nil
}

// extractParent verifies the parent checkpoint of an incremental one
// (layout or archive, owned by the caller) and lays its engine files out in dir.
//
// Its pages blobs are returned open rather than linked into dir: a link,
// and its removal with dir, would change their ctime and so void what the
// verified-blob cache knows of them (oci/verifycache.go).
func extractParent(parent, dir string) (map[string]*os.File, error) {
	if err := checkImageOwner(parent); err != nil {
		return nil, err
	}
	ck, err := oci.OpenCheckpoint(parent)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	return ck.ExtractOpen(dir)
}

func closeFiles(files map[string]*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// phaseTimer, when set (by the benchmarks), is told how long each phase of
// a checkpoint (dump, pack) or restore (verify, extract, create, engine) took.
var phaseTimer func(phase string, d time.Duration)

// timePhase logs (at debug level) the time since start spent in phase.
func timePhase(ctx context.Context, phase string, start time.Time) {
	reportPhase(ctx, phase, time.Since(start))
}

func reportPhase(ctx context.Context, phase string, d time.Duration) {
	log.G(ctx).WithField("phase", phase).WithField("duration", d).Debug("checkpoint/restore phase")
	if phaseTimer != nil {
		phaseTimer(phase, d)
	}
}

// clocks reads the clocks as the container sees them: the host's plus the
// offsets of the init's time namespace, so that a restore can make them
// continue (a container restored twice keeps its timeline).
func (c *Container) clocks() (oci.Clocks, error) {
	cl, err := oci.ReadClocks()
	if err != nil {
		return cl, err
	}
	mono, boot, err := timeOffsets(c.rec.Pid)
	if err != nil {
		return cl, err
	}
	cl.Monotonic += mono
	cl.Boottime += boot
	return cl, nil
}

// timeOffsets reads /proc/PID/timens_offsets (nanoseconds).
func timeOffsets(pid int) (mono, boot int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/timens_offsets", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, 0, nil
		}
		return 0, 0, fmt.Errorf("time namespace offsets of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 {
			continue
		}
		sec, err1 := strconv.ParseInt(fs[1], 10, 64)
		nsec, err2 := strconv.ParseInt(fs[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("time namespace offsets of pid %d: bad line %q", pid, sc.Text())
		}
		v := sec*int64(time.Second) + nsec
		switch fs[0] {
		case "monotonic", "1":
			mono = v
		case "boottime", "7":
			boot = v
		}
	}
	return mono, boot, sc.Err()
}

func processSummary(res *engine.DumpResult) []oci.Process {
	out := make([]oci.Process, 0, len(res.Processes))
	for _, p := range res.Processes {
		out = append(out, oci.Process{
			Pid: p.Pid, PPid: p.PPid, Comm: p.Comm, Args: p.Args, UID: p.Uid, GID: p.Gid,
			Cwd: p.Cwd, Threads: p.Threads, MemBytes: p.MemBytes, Files: p.Files,
		})
	}
	return out
}

// workDir returns dir (created 0700) or, when dir is empty, a new private
// directory under parent; cleanup removes what workDir created.
func workDir(dir, parent, pattern string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", nil, fmt.Errorf("create work directory: %w", err)
		}
		w, err := os.MkdirTemp(dir, pattern)
		if err != nil {
			return "", nil, fmt.Errorf("create work directory: %w", err)
		}
		return w, func() { _ = os.RemoveAll(w) }, nil
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", nil, fmt.Errorf("create work directory: %w", err)
	}
	w, err := os.MkdirTemp(parent, "."+pattern)
	if err != nil {
		return "", nil, fmt.Errorf("create work directory: %w", err)
	}
	return w, func() { _ = os.RemoveAll(w) }, nil
}

// RestoreOpts configure Restore: the container is created from the bundle
// as for Create, then its process tree is rebuilt from the checkpoint.
type RestoreOpts struct {
	CreateOpts
	// ImagePath is the checkpoint: an OCI layout directory or a .tar of one.
	ImagePath string
	// WorkPath holds the extracted engine files (default: a private
	// directory under the container's state dir).
	WorkPath string
	// VerifyFull hashes every blob of the image, even those that the
	// runtime's cache of verified blobs (<root>/verified, root only; see
	// oci.VerifyCache) says this host wrote or verified and nobody changed
	// since.
	VerifyFull bool
}

// verifyCacheDir is the directory of the verified-blob cache under the
// runtime's root (/run/cryo/verified by default).
const verifyCacheDir = "verified"

func (r *Runtime) verifyCache() *oci.VerifyCache {
	return oci.NewVerifyCache(filepath.Join(r.root, verifyCacheDir))
}

// Restore creates container id from a checkpoint. The image is verified
// completely before anything is created: every blob is hashed, except
// those the cache of verified blobs holds exactly as they are (written or
// verified by root on this host since it booted, unchanged since: see
// oci.VerifyCache), unless opts.VerifyFull. A restore that fails removes
// every process, mount and cgroup it made. The pages blobs are handed to
// the engine open, not linked into the work directory, which would change
// their ctime and so void their cache entries.
func (r *Runtime) Restore(ctx context.Context, id string, opts RestoreOpts) (_ *Container, retErr error) {
	if opts.ImagePath == "" {
		return nil, fmt.Errorf("restore of %s: image path is required: %w", id, ErrInvalidConfig)
	}
	if err := checkImageOwner(opts.ImagePath); err != nil {
		return nil, fmt.Errorf("restore of %s from %s: %w", id, opts.ImagePath, err)
	}
	start := time.Now()
	ck, err := oci.OpenCheckpointWith(opts.ImagePath, oci.OpenOptions{Cache: r.verifyCache(), Full: opts.VerifyFull})
	timePhase(ctx, "verify", start)
	if err != nil {
		return nil, fmt.Errorf("restore of %s from %s: %w", id, opts.ImagePath, err)
	}
	defer ck.Close()
	if err := checkRestorable(ck); err != nil {
		return nil, fmt.Errorf("restore of %s from %s: %w", id, opts.ImagePath, err)
	}
	spec := opts.Spec
	if spec == nil {
		if spec, err = restoreBundleSpec(opts.Bundle, ck.Config.Spec); err != nil {
			return nil, err
		}
	}
	spec = restoreSpec(spec, ck.Config.Time)
	work, cleanup, err := workDir(opts.WorkPath, r.root, "restore-"+id+"-")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	engineDir := filepath.Join(work, "engine")
	start = time.Now()
	pages, err := ck.ExtractOpen(engineDir)
	if err != nil {
		return nil, fmt.Errorf("restore of %s: extract checkpoint: %w", id, err)
	}
	defer closeFiles(pages)
	timePhase(ctx, "extract", start)
	copts := opts.CreateOpts
	copts.Spec = spec
	copts.InitELF = engine.Stub()
	copts.InitArgs = []string{"cryo-restore"}
	start = time.Now()
	c, err := r.Create(ctx, id, copts)
	if err != nil {
		return nil, err
	}
	timePhase(ctx, "create", start)
	defer func() {
		if retErr != nil {
			if err := c.Delete(ctx, true); err != nil {
				log.G(ctx).WithError(err).WithField("id", id).Warn("remove container of a failed restore")
			}
		}
	}()
	start = time.Now()
	if _, err := engine.Restore(ctx, engine.RestoreOptions{ImageDir: engineDir, Pid: c.Pid(), PagesFiles: pages}); err != nil {
		return nil, fmt.Errorf("restore of container %s: %w", id, err)
	}
	timePhase(ctx, "engine", start)
	return c, nil
}

// restoreBundleSpec is the bundle's config.json or, when the bundle has
// none (a container moved to another host with just its rootfs), the spec
// saved in the checkpoint, rooted at <bundle>/rootfs when its own root path
// does not exist here.
func restoreBundleSpec(bundle string, saved *specs.Spec) (*specs.Spec, error) {
	if bundle == "" {
		bundle = "."
	}
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return nil, err
	}
	spec, err := oci.LoadSpec(bundle)
	if err == nil || saved == nil || !errors.Is(err, os.ErrNotExist) {
		return spec, err
	}
	s := *saved
	if s.Root == nil {
		return nil, fmt.Errorf("checkpoint spec has no root and bundle %s has no config.json: %w", bundle, ErrInvalidConfig)
	}
	root := *s.Root
	if _, err := os.Stat(root.Path); err != nil {
		root.Path = filepath.Join(bundle, "rootfs")
	}
	s.Root = &root
	return &s, nil
}

// checkImageOwner refuses a caller other than root a checkpoint image
// (layout directory or archive) that another user owns: a checkpoint holds
// its owner's memory and files, and like `cryo checkpoint rm` only its owner
// or root may act on it, whatever its file modes allow.
func checkImageOwner(p string) error {
	uid := os.Geteuid()
	if uid == 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return fmt.Errorf("checkpoint image: %w", err)
	}
	if int(st.Uid) != uid {
		return fmt.Errorf("checkpoint is owned by uid %d, not by the caller (uid %d): %w", st.Uid, uid, unix.EPERM)
	}
	return nil
}

// checkRestorable refuses an image this host cannot run or that would give
// the caller more privilege than it has.
func checkRestorable(ck *oci.Checkpoint) error {
	cfg := ck.Config
	host, err := oci.HostInfo()
	if err != nil {
		return err
	}
	if cfg.Host.Arch != "" && cfg.Host.Arch != host.Arch {
		return fmt.Errorf("checkpoint is for %s, this host is %s: %w", cfg.Host.Arch, host.Arch, ErrNotSupported)
	}
	if missing := oci.MissingCPUFeatures(cfg.Host.CPUFeatures, host.CPUFeatures); len(missing) > 0 {
		return fmt.Errorf("this host's CPU lacks %s, which the checkpointed processes may use: %w",
			strings.Join(missing, ", "), ErrNotSupported)
	}
	if uid := os.Geteuid(); uid != 0 {
		for _, p := range cfg.Processes {
			if p.UID != uint32(uid) {
				return fmt.Errorf("process %d (%s) ran as uid %d; restoring it needs root, caller is uid %d: %w",
					p.Pid, p.Comm, p.UID, uid, unix.EPERM)
			}
		}
	}
	return nil
}

// restoreSpec returns a copy of spec whose init gets a new time namespace
// with offsets that make CLOCK_MONOTONIC and CLOCK_BOOTTIME continue from
// their values at the checkpoint, without a jump (a joined time namespace is
// left alone).
func restoreSpec(spec *specs.Spec, saved oci.Clocks) *specs.Spec {
	s := *spec
	l := *spec.Linux
	s.Linux = &l
	for _, ns := range l.Namespaces {
		if ns.Type == specs.TimeNamespace && ns.Path != "" {
			return &s
		}
	}
	now, err := oci.ReadClocks()
	if err != nil || saved.Monotonic == 0 {
		return &s
	}
	l.Namespaces = append([]specs.LinuxNamespace{}, l.Namespaces...)
	if !slices.ContainsFunc(l.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == specs.TimeNamespace }) {
		l.Namespaces = append(l.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace})
	}
	l.TimeOffsets = map[string]specs.LinuxTimeOffset{
		"monotonic": timeOffset(saved.Monotonic - now.Monotonic),
		"boottime":  timeOffset(saved.Boottime - now.Boottime),
	}
	return &s
}

// timeOffset splits nanoseconds into the spec's seconds and non-negative
// nanoseconds.
func timeOffset(ns int64) specs.LinuxTimeOffset {
	sec := ns / int64(time.Second)
	rem := ns % int64(time.Second)
	if rem < 0 {
		sec--
		rem += int64(time.Second)
	}
	return specs.LinuxTimeOffset{Secs: sec, Nanosecs: uint32(rem)}
}
