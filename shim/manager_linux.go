package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	apitypes "github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// RuntimeName is the containerd runtime type served by containerd-shim-cryo-v2.
const RuntimeName = "io.containerd.cryo.v2"

// groupAnnotation groups the containers of one Kubernetes pod into one shim, as the runc shim does.
const groupAnnotation = "io.kubernetes.cri.sandbox-id"

// defaultSocketDir is where shim sockets go when containerd does not name a directory.
const defaultSocketDir = "/run/containerd/s"

// NewManager returns the shim.Shim that containerd's bootstrap protocol drives: Start spawns
// (or reuses, for a pod) the long-running shim, Stop cleans up after a shim that died.
func NewManager(name, version string) shim.Shim {
	return &manager{name: name, version: version}
}

type manager struct {
	name    string
	version string
}

func (m *manager) Name() string { return m.name }

// Start runs in a short-lived "start" process whose working directory is the bundle. It creates
// the ttrpc socket, starts the server process with the listener as fd 3, and returns the address.
// When the container belongs to a pod whose shim is already serving, that shim's address is
// returned instead.
func (m *manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	id := params.GetInstanceID()
	group, err := groupOf(".")
	if err != nil {
		return nil, err
	}
	if group == "" {
		group = id
	}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = defaultSocketDir
	}
	address, err := shim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), group, false)
	if err != nil {
		return nil, err
	}
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: address}
	l, err := listen(address)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		return result, nil // the pod's shim serves this container too
	}
	if err != nil {
		return nil, err
	}
	// The server process inherits the listener; closing ours must not unlink the socket.
	l.SetUnlinkOnClose(false)
	defer l.Close()
	lf, err := l.File()
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	defer func() {
		if retErr != nil {
			shim.RemoveSocket(address)
		}
	}()

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	cmd.ExtraFiles = []*os.File{lf}
	// Its own process group: signals to containerd's group do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start shim server: %w", err)
	}
	defer func() {
		if retErr != nil {
			cmd.Process.Kill()
		}
	}()
	// This process exits right after replying; the server is reparented to containerd's
	// subreaper or init. Release it so that no zombie is left if we linger.
	go cmd.Wait()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		return nil, fmt.Errorf("adjust oom score of shim %d: %w", cmd.Process.Pid, err)
	}
	return result, nil
}

// listen creates the shim socket. An address in use by a live shim (the pod's) gives
// ErrAlreadyExists; a stale socket file is removed and created again.
func listen(address string) (*net.UnixListener, error) {
	l, err := shim.NewSocket(address)
	if err == nil {
		return l, nil
	}
	if !shim.SocketEaddrinuse(err) {
		return nil, fmt.Errorf("create shim socket %s: %w", address, err)
	}
	if shim.CanConnect(address) {
		return nil, errdefs.ErrAlreadyExists
	}
	if err := shim.RemoveSocket(address); err != nil {
		return nil, fmt.Errorf("remove stale shim socket %s: %w", address, err)
	}
	return shim.NewSocket(address)
}

// groupOf returns the pod the bundle's container belongs to ("" when none).
func groupOf(bundle string) (string, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", fmt.Errorf("read bundle spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return "", fmt.Errorf("parse bundle spec: %w", err)
	}
	return spec.Annotations[groupAnnotation], nil
}

// Stop runs in a short-lived "delete" process when containerd finds the shim of container id
// gone (crash, kill, reboot): it removes what is left of the container and reports its exit.
func (m *manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return shim.StopStatus{}, err
	}
	bundle := filepath.Join(filepath.Dir(cwd), id)
	if opts, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok && opts.BundlePath != "" {
		bundle = opts.BundlePath
	}
	if err := forceDelete(ctx, bundle, id); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("remove container after shim loss")
	}
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("unmount rootfs after shim loss")
	}
	if rec, err := readExit(bundle); err == nil {
		return shim.StopStatus{Pid: rec.Pid, ExitStatus: rec.Status, ExitedAt: rec.At}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).WithField("id", id).Warn("read recorded exit status")
	}
	return shim.StopStatus{Pid: readInitPid(bundle), ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: time.Now()}, nil
}

// Info describes the runtime to containerd (`ctr plugins ls`, CRI runtime handlers).
func (m *manager) Info(ctx context.Context, _ io.Reader) (*apitypes.RuntimeInfo, error) {
	return &apitypes.RuntimeInfo{
		Name:    m.name,
		Version: &apitypes.RuntimeVersion{Version: m.version},
	}, nil
}
