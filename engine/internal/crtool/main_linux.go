// Command crtool is a debugging entry to the engine, for trying it by hand:
//
//	crtool dump -pid PID -dir DIR [-leave-running] [-freezer CGROUPDIR]
//	crtool restore -dir DIR
//
// restore starts the stub as PID 1 of a new PID and mount namespace (in the
// caller's other namespaces), rebuilds the tree in it, prints the host PID
// of the restored root and waits for it to exit. It is not the product's
// interface: the runtime drives the engine through its Go API.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cryo-run/cryo/engine"
)

// cgroupFreezer freezes a cgroup v1 freezer or cgroup v2 directory.
type cgroupFreezer string

func (c cgroupFreezer) set(v1, v2 string) error {
	dir := string(c)
	if _, err := os.Stat(filepath.Join(dir, "freezer.state")); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "freezer.state"), []byte(v1), 0); err != nil {
			return err
		}
		for i := 0; i < 5000; i++ {
			data, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
			if err == nil && strings.TrimSpace(string(data)) == v1 {
				return nil
			}
			time.Sleep(time.Millisecond)
		}
		return fmt.Errorf("%s: not %s", dir, v1)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte(v2), 0); err != nil {
		return err
	}
	for i := 0; i < 5000; i++ {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err == nil && strings.Contains(string(data), "frozen "+v2) {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("%s: not frozen=%s", dir, v2)
}

func (c cgroupFreezer) Freeze() error { return c.set("FROZEN", "1") }
func (c cgroupFreezer) Thaw() error   { return c.set("THAWED", "0") }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crtool dump|restore [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "dump":
		err = dump(os.Args[2:])
	case "restore":
		err = restore(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crtool:", err)
		os.Exit(1)
	}
}

func dump(args []string) error {
	fs := flag.NewFlagSet("dump", flag.ExitOnError)
	pid := fs.Int("pid", 0, "host PID of the root task")
	dir := fs.String("dir", "", "image directory")
	leave := fs.Bool("leave-running", false, "leave the tree running")
	freezer := fs.String("freezer", "", "cgroup directory to freeze while seizing")
	_ = fs.Parse(args)
	opts := engine.DumpOptions{Pid: *pid, ImageDir: *dir, LeaveRunning: *leave}
	if *freezer != "" {
		opts.Freezer = cgroupFreezer(*freezer)
	}
	start := time.Now()
	res, err := engine.Dump(context.Background(), opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "dumped in %v\n", time.Since(start))
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func restore(args []string) error {
	fs := flag.NewFlagSet("restore", flag.ExitOnError)
	dir := fs.String("dir", "", "image directory")
	_ = fs.Parse(args)
	stub, err := os.CreateTemp("", "cryo-stub-")
	if err != nil {
		return err
	}
	defer os.Remove(stub.Name())
	if _, err := stub.Write(engine.Stub()); err != nil {
		return err
	}
	if err := stub.Chmod(0o700); err != nil {
		return err
	}
	stub.Close()
	cmd := exec.Command(stub.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	if err := cmd.Start(); err != nil {
		return err
	}
	for i := 0; i < 5000; i++ {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); err == nil && exe == stub.Name() {
			break
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	res, err := engine.Restore(context.Background(), engine.RestoreOptions{ImageDir: *dir, Pid: cmd.Process.Pid})
	if err != nil {
		_ = cmd.Wait()
		return err
	}
	fmt.Fprintf(os.Stderr, "restored in %v: pids %v\n", time.Since(start), res.Pids)
	return cmd.Wait()
}
