package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountOpts is a parsed mount option list.
type mountOpts struct {
	flags       uintptr // MS_* to set
	clear       uintptr // MS_* explicitly cleared (rw, suid, ...)
	propagation []uintptr
	attrSet     uint64 // MOUNT_ATTR_* for recursive (rro, rnosuid, ...) options
	attrClr     uint64
	data        []string
}

var flagOpts = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"dirsync": {false, unix.MS_DIRSYNC}, "remount": {false, unix.MS_REMOUNT},
	"mand": {false, unix.MS_MANDLOCK}, "nomand": {true, unix.MS_MANDLOCK},
	"atime": {true, unix.MS_NOATIME}, "noatime": {false, unix.MS_NOATIME},
	"diratime": {true, unix.MS_NODIRATIME}, "nodiratime": {false, unix.MS_NODIRATIME},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"lazytime": {false, unix.MS_LAZYTIME}, "nolazytime": {true, unix.MS_LAZYTIME},
	"silent": {false, unix.MS_SILENT}, "loud": {true, unix.MS_SILENT},
	"defaults": {false, 0},
}

var propagationOpts = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

var recAttrOpts = map[string]struct {
	clear bool
	attr  uint64
}{
	"rro": {false, unix.MOUNT_ATTR_RDONLY}, "rrw": {true, unix.MOUNT_ATTR_RDONLY},
	"rnosuid": {false, unix.MOUNT_ATTR_NOSUID}, "rsuid": {true, unix.MOUNT_ATTR_NOSUID},
	"rnodev": {false, unix.MOUNT_ATTR_NODEV}, "rdev": {true, unix.MOUNT_ATTR_NODEV},
	"rnoexec": {false, unix.MOUNT_ATTR_NOEXEC}, "rexec": {true, unix.MOUNT_ATTR_NOEXEC},
	"rnodiratime": {false, unix.MOUNT_ATTR_NODIRATIME}, "rdiratime": {true, unix.MOUNT_ATTR_NODIRATIME},
	"rnoatime": {false, unix.MOUNT_ATTR_NOATIME}, "rrelatime": {false, unix.MOUNT_ATTR_RELATIME},
	"rstrictatime": {false, unix.MOUNT_ATTR_STRICTATIME},
}

func parseMountOptions(opts []string) (mountOpts, error) {
	var m mountOpts
	for _, o := range opts {
		if f, ok := flagOpts[o]; ok {
			if f.clear {
				m.flags &^= f.flag
				m.clear |= f.flag
			} else {
				m.flags |= f.flag
			}
			continue
		}
		if p, ok := propagationOpts[o]; ok {
			m.propagation = append(m.propagation, p)
			continue
		}
		if a, ok := recAttrOpts[o]; ok {
			if a.clear {
				m.attrClr |= a.attr
			} else {
				m.attrSet |= a.attr
			}
			continue
		}
		switch o {
		case "tmpcopyup", "idmap", "ridmap", "copy-symlink", "src-nofollow", "dst-nofollow":
			return m, fmt.Errorf("mount option %q: %w", o, ErrNotSupported)
		}
		m.data = append(m.data, o)
	}
	return m, nil
}

// prepareRootfs runs in the container's new mount namespace before
// pivot_root: it cuts propagation to the host, makes the rootfs a mount point
// and performs every mount of the spec and the /dev setup.
func prepareRootfs(cfg *initConfig) error {
	s := cfg.Spec
	rootfs := cfg.Rootfs
	flag := uintptr(unix.MS_SLAVE | unix.MS_REC)
	if p, ok := propagationOpts[s.Linux.RootfsPropagation]; ok {
		flag = p
	}
	if err := unix.Mount("", "/", "", flag, ""); err != nil {
		return fmt.Errorf("set propagation of /: %w", err)
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs %s: %w", rootfs, err)
	}
	devBound := false
	hasDevpts := false
	for _, m := range s.Mounts {
		if err := mountOne(cfg, m); err != nil {
			return err
		}
		if filepath.Clean(m.Destination) == "/dev" && isBind(m) {
			devBound = true
		}
		if m.Type == "devpts" && filepath.Clean(m.Destination) == "/dev/pts" {
			hasDevpts = true
		}
	}
	if !devBound {
		if err := createDevices(cfg); err != nil {
			return err
		}
		if err := devSymlinks(rootfs, hasDevpts); err != nil {
			return err
		}
	}
	return nil
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

func mountOne(cfg *initConfig, m specs.Mount) error {
	dest, err := securejoin.SecureJoin(cfg.Rootfs, m.Destination)
	if err != nil {
		return fmt.Errorf("resolve mount destination %s: %w", m.Destination, err)
	}
	o, err := parseMountOptions(m.Options)
	if err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	data := strings.Join(o.data, ",")
	switch {
	case isBind(m):
		src := m.Source
		if !filepath.IsAbs(src) {
			src = filepath.Join(cfg.Bundle, src)
		}
		st, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("bind mount source %s: %w", src, err)
		}
		if err := makeMountpoint(dest, st.IsDir()); err != nil {
			return err
		}
		bindFlags := uintptr(unix.MS_BIND) | o.flags&unix.MS_REC
		if err := unix.Mount(src, dest, "", bindFlags, ""); err != nil {
			return fmt.Errorf("bind mount %s on %s: %w", src, m.Destination, err)
		}
		if rest := o.flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); rest != 0 {
			rest |= lockedFlags(dest)
			if err := unix.Mount("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|rest, ""); err != nil {
				return fmt.Errorf("remount bind %s: %w", m.Destination, err)
			}
		}
	case m.Type == "cgroup" || m.Type == "cgroup2":
		if err := makeMountpoint(dest, true); err != nil {
			return err
		}
		if err := mountCgroup(cfg, dest, o); err != nil {
			return fmt.Errorf("mount cgroup on %s: %w", m.Destination, err)
		}
	default:
		if err := makeMountpoint(dest, true); err != nil {
			return err
		}
		if err := unix.Mount(m.Source, dest, m.Type, o.flags, data); err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.Type, m.Destination, err)
		}
	}
	if o.attrSet != 0 || o.attrClr != 0 {
		attr := unix.MountAttr{Attr_set: o.attrSet, Attr_clr: o.attrClr}
		if err := unix.MountSetattr(-1, dest, unix.AT_RECURSIVE, &attr); err != nil {
			return fmt.Errorf("set recursive attributes of %s: %w", m.Destination, err)
		}
	}
	for _, p := range o.propagation {
		if err := unix.Mount("", dest, "", p, ""); err != nil {
			return fmt.Errorf("set propagation of %s: %w", m.Destination, err)
		}
	}
	return nil
}

// lockedFlags returns the nosuid/nodev/noexec/atime flags of the mount at
// path, which a bind remount must keep (they are locked inside user namespaces).
func lockedFlags(path string) uintptr {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0
	}
	var f uintptr
	for _, x := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&x.st != 0 {
			f |= x.ms
		}
	}
	return f
}

func makeMountpoint(dest string, dir bool) error {
	if dir {
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", dest, err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("create mount point parent %s: %w", dest, err)
	}
	f, err := os.OpenFile(dest, os.O_CREATE|os.O_RDONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create mount point %s: %w", dest, err)
	}
	return f.Close()
}

// mountCgroup mounts the container's cgroups at dest. On a pure cgroup v2 host
// that is one cgroup2 mount; on v1/hybrid hosts a tmpfs with one mount per
// hierarchy, named like the host's. With a cgroup namespace the file systems
// are mounted afresh (their root is the namespace root); without one the
// container's own cgroup directories are bind mounted.
func mountCgroup(cfg *initConfig, dest string, o mountOpts) error {
	flags := o.flags | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	hier, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	own, err := ownCgroups()
	if err != nil {
		return err
	}
	mountH := func(h cgroupHierarchy, target string) error {
		if cfg.UnshareCgroup {
			src := "cgroup"
			if h.fstype == "cgroup2" {
				src = "cgroup2"
			}
			return unix.Mount(src, target, h.fstype, flags, h.opts)
		}
		rel := own[h.key]
		if err := unix.Mount(filepath.Join(h.mountpoint, rel), target, "", unix.MS_BIND, ""); err != nil {
			return err
		}
		return unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|flags, "")
	}
	if len(hier) == 1 && hier[0].fstype == "cgroup2" && hier[0].mountpoint == "/sys/fs/cgroup" {
		return mountH(hier[0], dest)
	}
	if err := unix.Mount("tmpfs", dest, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
		return err
	}
	for _, h := range hier {
		target := filepath.Join(dest, filepath.Base(h.mountpoint))
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := mountH(h, target); err != nil {
			return fmt.Errorf("hierarchy %s: %w", h.mountpoint, err)
		}
	}
	if flags&unix.MS_RDONLY != 0 {
		return unix.Mount("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	return nil
}

type cgroupHierarchy struct {
	mountpoint, fstype, opts string
	key                      string // the controllers as /proc/self/cgroup names them ("" for v2)
}

func cgroupHierarchies() ([]cgroupHierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupHierarchy
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		i := 6
		for i < len(fields) && fields[i] != "-" {
			i++
		}
		if i+3 >= len(fields) {
			continue
		}
		fstype, superOpts := fields[i+1], fields[i+3]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		var keep []string
		for _, o := range strings.Split(superOpts, ",") {
			if o != "rw" && o != "ro" {
				keep = append(keep, o)
			}
		}
		h := cgroupHierarchy{mountpoint: fields[4], fstype: fstype}
		if fstype == "cgroup" {
			h.opts = strings.Join(keep, ",")
			var ctrls []string
			for _, o := range keep {
				if knownController(o) || strings.HasPrefix(o, "name=") {
					ctrls = append(ctrls, o)
				}
			}
			h.opts = strings.Join(ctrls, ",")
			h.key = h.opts
		}
		out = append(out, h)
	}
	return out, sc.Err()
}

func knownController(c string) bool {
	switch c {
	case "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio",
		"blkio", "perf_event", "hugetlb", "pids", "rdma", "misc":
		return true
	}
	return false
}

// ownCgroups maps /proc/self/cgroup's controller lists to this process's paths.
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out, nil
}

var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

func createDevices(cfg *initConfig) error {
	devs := append([]specs.LinuxDevice{}, defaultDevices...)
	for _, d := range cfg.Spec.Linux.Devices {
		replaced := false
		for i := range devs {
			if devs[i].Path == d.Path {
				devs[i], replaced = d, true
			}
		}
		if !replaced {
			devs = append(devs, d)
		}
	}
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, d := range devs {
		if err := createDevice(cfg, d); err != nil {
			return fmt.Errorf("create device %s: %w", d.Path, err)
		}
	}
	return nil
}

func createDevice(cfg *initConfig, d specs.LinuxDevice) error {
	dest, err := securejoin.SecureJoin(cfg.Rootfs, d.Path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	mode := uint32(0o666)
	if d.FileMode != nil {
		mode = uint32(*d.FileMode & 0o7777)
	}
	if cfg.NewNS[string(specs.UserNamespace)] || cfg.JoinUser {
		// mknod is refused inside a user namespace: bind the host's node.
		if err := makeMountpoint(dest, false); err != nil {
			return err
		}
		return unix.Mount(d.Path, dest, "", unix.MS_BIND, "")
	}
	var typ uint32
	switch d.Type {
	case "c", "u":
		typ = unix.S_IFCHR
	case "b":
		typ = unix.S_IFBLK
	case "p":
		typ = unix.S_IFIFO
	}
	if err := unix.Unlink(dest); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := unix.Mknod(dest, typ|mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
		return err
	}
	uid, gid := 0, 0
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	if err := unix.Chown(dest, uid, gid); err != nil {
		return err
	}
	return unix.Chmod(dest, mode)
}

func devSymlinks(rootfs string, devpts bool) error {
	links := [][2]string{
		{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
	}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "/dev/core"})
	}
	if devpts {
		ptmx := filepath.Join(rootfs, "dev/ptmx")
		if err := os.Remove(ptmx); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %s: %w", ptmx, err)
		}
		links = append(links, [2]string{"pts/ptmx", "/dev/ptmx"})
	}
	for _, l := range links {
		dst := filepath.Join(rootfs, l[1])
		if err := os.Symlink(l[0], dst); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("symlink %s: %w", l[1], err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root of the mount namespace and detaches the
// old root (runc's fd-based pivot_root(".", ".") sequence).
func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open old root: %w", err)
	}
	defer unix.Close(oldroot)
	newroot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open new root: %w", err)
	}
	defer unix.Close(newroot)
	if err := unix.Fchdir(newroot); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", rootfs, err)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return err
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}

// moveRoot is --no-pivot: move the rootfs mount onto / and chroot into it.
func moveRoot(rootfs string) error {
	if err := unix.Chdir(rootfs); err != nil {
		return err
	}
	if err := unix.Mount(rootfs, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move rootfs to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// finishRootfs runs after pivot_root: read-only and masked paths, the
// read-only root and the requested propagation of /.
func finishRootfs(s *specs.Spec) error {
	for _, p := range s.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return err
		}
	}
	for _, p := range s.Linux.MaskedPaths {
		if err := maskPath(p); err != nil {
			return err
		}
	}
	if s.Root.Readonly {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|lockedFlags("/"), ""); err != nil {
			return fmt.Errorf("remount root read-only: %w", err)
		}
	}
	if p, ok := propagationOpts[s.Linux.RootfsPropagation]; ok {
		if err := unix.Mount("", "/", "", p, ""); err != nil {
			return fmt.Errorf("set rootfs propagation %s: %w", s.Linux.RootfsPropagation, err)
		}
	}
	return nil
}

func readonlyPath(p string) error {
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("bind read-only path %s: %w", p, err)
	}
	flags := uintptr(unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY) | lockedFlags(p)
	if err := unix.Mount("", p, "", flags, ""); err != nil {
		return fmt.Errorf("remount read-only path %s: %w", p, err)
	}
	return nil
}

func maskPath(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("masked path %s: %w", p, err)
	}
	if st.IsDir() {
		err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "")
	} else {
		err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}
