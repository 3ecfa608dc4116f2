package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// stdioConfig is a process's stdio as containerd names it: FIFO paths, or for stdout and
// stderr also file:///path and binary:///path?args URIs (logging drivers, e.g. nerdctl's).
type stdioConfig struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
}

// stdioFiles are the files a new process gets as stdio (nil = /dev/null). With a terminal the
// runtime allocates the pty and hands back its master instead.
type stdioFiles struct {
	Stdin, Stdout, Stderr *os.File
	Terminal              bool
}

// procIO connects a process's stdio to containerd's: pipes between the process and the FIFOs
// (so the shim, not the process, absorbs a client going away and CloseIO can close stdin), or
// the pty master when the process has a terminal.
type procIO struct {
	cfg stdioConfig
	// proc is what the process gets; the shim closes its copy once the process has it.
	proc stdioFiles

	mu        sync.Mutex
	stdinW    io.WriteCloser // our end of the stdin pipe, or the pty master
	stdinFifo io.ReadCloser
	console   console.Console
	closers   []io.Closer
	copies    sync.WaitGroup // output copiers
	logger    *exec.Cmd      // binary:// logging driver
}

func newProcIO(ctx context.Context, id, ns string, cfg stdioConfig) (_ *procIO, retErr error) {
	p := &procIO{cfg: cfg, proc: stdioFiles{Terminal: cfg.Terminal}}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	if cfg.Terminal {
		// The copies start in attachConsole, once the runtime returns the pty master.
		return p, nil
	}
	if cfg.Stdin != "" {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.proc.Stdin, p.stdinW = r, w
		f, err := fifo.OpenFifo(ctx, cfg.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open stdin %s: %w", cfg.Stdin, err)
		}
		p.stdinFifo = f
		go func() {
			io.Copy(w, f)
			p.closeStdin()
		}()
	}
	outURI, err := parseStdioURI(cfg.Stdout)
	if err != nil {
		return nil, err
	}
	errURI, err := parseStdioURI(cfg.Stderr)
	if err != nil {
		return nil, err
	}
	if outURI != nil && outURI.Scheme == "binary" {
		if errURI == nil || *errURI != *outURI {
			return nil, fmt.Errorf("stdout %q and stderr %q: a binary:// logger must receive both: %w", cfg.Stdout, cfg.Stderr, errInvalid)
		}
		if err := p.startLogger(ctx, id, ns, outURI); err != nil {
			return nil, err
		}
		return p, nil
	}
	if p.proc.Stdout, err = p.output(ctx, outURI); err != nil {
		return nil, err
	}
	if cfg.Stderr == cfg.Stdout && p.proc.Stdout != nil {
		p.proc.Stderr = p.proc.Stdout
	} else if p.proc.Stderr, err = p.output(ctx, errURI); err != nil {
		return nil, err
	}
	return p, nil
}

var errInvalid = errors.New("invalid argument")

// parseStdioURI returns nil for no stdio, a URI with scheme "fifo" for a plain path.
func parseStdioURI(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("stdio %q: %w", s, err)
	}
	switch u.Scheme {
	case "", "fifo":
		return &url.URL{Scheme: "fifo", Path: s}, nil
	case "file", "binary":
		return u, nil
	}
	return nil, fmt.Errorf("stdio %q: scheme %q not supported: %w", s, u.Scheme, errInvalid)
}

// output returns the file the process writes one stream to.
func (p *procIO) output(ctx context.Context, u *url.URL) (*os.File, error) {
	if u == nil {
		return nil, nil
	}
	if u.Scheme == "file" {
		f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		p.closers = append(p.closers, f)
		return f, nil
	}
	// O_RDWR never blocks on open and never fails with EPIPE when the client is gone.
	ff, err := fifo.OpenFifo(ctx, u.Path, syscall.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", u.Path, err)
	}
	p.closers = append(p.closers, ff)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, r)
	p.copies.Add(1)
	go func() {
		defer p.copies.Done()
		io.Copy(ff, r)
		// EOF: every writer (the process and its children) is gone. Closing our end lets the
		// client see EOF too; it waits for that before it reports the exit.
		ff.Close()
	}()
	return w, nil
}

// startLogger starts a binary:// logging driver: it reads the process's stdout and stderr
// from fds 3 and 4 and closes fd 5 when it is ready.
func (p *procIO) startLogger(ctx context.Context, id, ns string, u *url.URL) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 && vs[0] != "" {
			args = append(args, vs[0])
		}
	}
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+ns)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	ec, err := reaper.Default.Start(cmd)
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		readyR.Close()
		outW.Close()
		errW.Close()
		return fmt.Errorf("start logging binary %s: %w", u.Path, err)
	}
	p.logger = cmd
	p.proc.Stdout, p.proc.Stderr = outW, errW
	go reaper.Default.Wait(cmd, ec)
	// Ready when the driver closes fd 5 (reads return EOF).
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, readyR)
		readyR.Close()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("logging binary %s not ready after 10s", u.Path)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attachConsole wires the pty master of a terminal process to containerd's FIFOs.
func (p *procIO) attachConsole(ctx context.Context, master *os.File) error {
	c, err := console.ConsoleFromFile(master)
	if err != nil {
		return fmt.Errorf("console from pty master: %w", err)
	}
	p.mu.Lock()
	p.console = c
	p.mu.Unlock()
	if p.cfg.Stdin != "" {
		f, err := fifo.OpenFifo(ctx, p.cfg.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open stdin %s: %w", p.cfg.Stdin, err)
		}
		p.mu.Lock()
		p.stdinFifo = f
		p.mu.Unlock()
		go io.Copy(c, f)
	}
	if p.cfg.Stdout != "" {
		ff, err := fifo.OpenFifo(ctx, p.cfg.Stdout, syscall.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open stdout %s: %w", p.cfg.Stdout, err)
		}
		p.closers = append(p.closers, ff)
		p.copies.Add(1)
		go func() {
			defer p.copies.Done()
			// EIO once every slave fd is closed: the terminal's end of stream.
			io.Copy(ff, c)
			ff.Close()
		}()
	}
	return nil
}

// resize sets the terminal size of a terminal process.
func (p *procIO) resize(width, height uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.console == nil {
		return fmt.Errorf("process has no terminal: %w", errInvalid)
	}
	return p.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// closeStdin closes the process's stdin (CloseIO): it sees EOF. With a terminal, EOF is sent
// as the terminal's EOF character.
func (p *procIO) closeStdin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdinFifo != nil {
		p.stdinFifo.Close()
		p.stdinFifo = nil
	}
	if p.console != nil {
		p.console.Write([]byte{4}) // ^D
		return
	}
	if p.stdinW != nil {
		p.stdinW.Close()
		p.stdinW = nil
	}
}

// started drops the shim's copies of the files the process now holds, so that output copies
// see EOF when the process (and its children) exit.
func (p *procIO) started() {
	seen := map[*os.File]bool{}
	for _, f := range []*os.File{p.proc.Stdin, p.proc.Stdout, p.proc.Stderr} {
		if f != nil && !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
	p.proc = stdioFiles{Terminal: p.cfg.Terminal}
}

// wait waits for the output copies to drain, at most timeout: a background child of the
// process may hold the pipe open after the process exited.
func (p *procIO) wait(timeout time.Duration) {
	done := make(chan struct{})
	go func() { p.copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// Close releases everything: FIFOs, pipes, the console.
func (p *procIO) Close() error {
	p.started()
	p.closeStdin()
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, c := range p.closers {
		if err := c.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	p.closers = nil
	if p.console != nil {
		p.console.Close()
		p.console = nil
	}
	if p.logger != nil && p.logger.Process != nil {
		// The driver exits on EOF of its pipes; this only stops a stuck one.
		if err := p.logger.Process.Signal(unix.Signal(0)); err == nil {
			log.L.WithField("pid", p.logger.Process.Pid).Debug("logging binary still running after close")
		}
	}
	return errors.Join(errs...)
}
