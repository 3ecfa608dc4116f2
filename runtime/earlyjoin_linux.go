package runtime

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cryo-run/cryo/runtime/internal/nsenter"
)

// earlyJoins are the namespace changes that the cgo constructor of package
// nsenter makes in the re-executed init before its Go runtime starts, when
// the init is still single-threaded: only such a process may join a user or
// a time namespace.
//
// The semantics are runc's (its nsexec joins the user namespace first, then
// the other namespaces given by path, then creates the new ones):
//
//   - A user namespace given by path is joined first, and the init becomes
//     root (uid and gid 0) in it: that namespace must map 0, as a new one
//     must. Then the other namespaces given by path are joined (ipc, uts,
//     net, pid, cgroup; with the capabilities the init holds in the joined
//     user namespace, so they must belong to it or one of its descendants),
//     and only then are the new namespaces created (unshare, then a fork for
//     a new or joined pid namespace): they belong to the joined user
//     namespace, as they would to a new one. The mount namespace (new:
//     unshared here; given by path: joined by the Go init, as always) and
//     the new cgroup and time namespaces (unshared by the Go init, see
//     init_linux.go) also come after the user namespace.
//   - A time namespace given by path is joined last. Without a user
//     namespace of the container's own, the other namespaces are made as
//     usual by the parent (clone flags and setns on a locked thread) and
//     the constructor joins only the time namespace. With a new user
//     namespace it is refused: the init would hold no capability over a
//     time namespace outside it.
//
// With a fork, the init is the constructor's child, not ours: it sends its
// pid over the sync socket (SCM_CREDENTIALS), and Container.Wait gets its
// status only when the caller is a child subreaper.
type earlyJoins struct {
	paths   []string // joined in this order
	root    bool
	unshare uintptr
	fork    bool
}

// joinOrder is the order of the namespaces joined after the user namespace.
var joinOrder = []specs.LinuxNamespaceType{specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace, specs.PIDNamespace, specs.CgroupNamespace}

// planEarlyJoins moves the joins and clone flags that must happen after
// joining userPath into the constructor's plan, and adds timePath.
func planEarlyJoins(l *specs.Linux, newNS map[string]bool, userPath, timePath string, cloneFlags *uintptr, joins *[]nsJoin) (earlyJoins, error) {
	var e earlyJoins
	if userPath == "" && timePath == "" {
		return e, nil
	}
	if !nsenter.Available {
		return e, fmt.Errorf("joining the user or time namespace %s%s needs the nsenter constructor, missing from this build without cgo: %w", userPath, timePath, ErrNotSupported)
	}
	if timePath != "" && len(l.TimeOffsets) > 0 {
		return e, fmt.Errorf("timeOffsets set for the time namespace %s given by path (offsets are for a new one): %w", timePath, ErrInvalidConfig)
	}
	if timePath != "" && newNS[string(specs.UserNamespace)] {
		return e, fmt.Errorf("joining the time namespace %s from a new user namespace, which holds no capability over it: %w", timePath, ErrNotSupported)
	}
	if userPath != "" {
		e.paths = append(e.paths, userPath)
		e.root = true
		for _, t := range joinOrder {
			for _, j := range *joins {
				if j.name == string(t) {
					e.paths = append(e.paths, j.path)
					e.fork = e.fork || t == specs.PIDNamespace
				}
			}
		}
		*joins = nil
		e.unshare = *cloneFlags
		e.fork = e.fork || *cloneFlags&unix.CLONE_NEWPID != 0
		*cloneFlags = 0
	}
	if timePath != "" {
		e.paths = append(e.paths, timePath)
	}
	return e, nil
}

// env opens the namespaces, passes them to the init with addFile and
// returns the environment that drives the constructor.
func (e earlyJoins) env(addFile func(*os.File) int) ([]string, error) {
	var fds []string
	for _, p := range e.paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("open namespace: %w", err)
		}
		fds = append(fds, strconv.Itoa(addFile(f)))
	}
	env := []string{nsenter.Env + "=" + strings.Join(fds, ",")}
	if e.root {
		env = append(env, nsenter.RootEnv+"=1")
	}
	if e.unshare != 0 {
		env = append(env, nsenter.UnshareEnv+"="+strconv.FormatUint(uint64(e.unshare), 10))
	}
	if e.fork {
		env = append(env, nsenter.ForkEnv+"=1", initSendPidEnv+"=1")
	}
	return env, nil
}

// checkJoinedMaps accepts uidMappings and gidMappings next to a user
// namespace given by path only when they are that namespace's (as read from
// the init that joined it): they cannot be changed.
func checkJoinedMaps(pid int, l *specs.Linux) error {
	for _, m := range []struct {
		file string
		spec []specs.LinuxIDMapping
	}{{"uid_map", l.UIDMappings}, {"gid_map", l.GIDMappings}} {
		if len(m.spec) == 0 {
			continue
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + m.file)
		if err != nil {
			return fmt.Errorf("read %s of the joined user namespace: %w", m.file, err)
		}
		var have []specs.LinuxIDMapping
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var c, h, n uint32
			if _, err := fmt.Sscan(line, &c, &h, &n); err == nil {
				have = append(have, specs.LinuxIDMapping{ContainerID: c, HostID: h, Size: n})
			}
		}
		want := slices.Clone(m.spec)
		cmp := func(a, b specs.LinuxIDMapping) int { return int(int64(a.ContainerID) - int64(b.ContainerID)) }
		slices.SortFunc(have, cmp)
		slices.SortFunc(want, cmp)
		if !slices.Equal(have, want) {
			return fmt.Errorf("%s %v differ from those of the joined user namespace %v: %w", m.file, want, have, ErrInvalidConfig)
		}
	}
	return nil
}
