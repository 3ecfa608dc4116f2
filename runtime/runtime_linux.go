package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where container state lives unless the caller picks another root.
const DefaultRoot = "/run/cryo"

const stateFile = "state.json"

var idRegexp = regexp.MustCompile(`^[\w+\-.]+$`)

// Runtime manages the containers whose state lives under one root directory.
type Runtime struct {
	root string
	// InitCommand is the argv that re-executes this program as a container
	// init; its main (or TestMain) must call Reexec first. Defaults to
	// /proc/self/exe init.
	InitCommand []string
	// forceNsenterELF makes Exec use the nsenter ELF stub even when the cgo
	// constructor is linked in (tests cover both paths).
	forceNsenterELF bool
}

// New returns a Runtime keeping its state under root (created 0700).
func New(root string) (*Runtime, error) {
	if root == "" {
		root = DefaultRoot
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("runtime root %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("create runtime root: %w", err)
	}
	return &Runtime{root: abs, InitCommand: []string{"/proc/self/exe", "init"}}, nil
}

// Root is the runtime's state directory.
func (r *Runtime) Root() string { return r.root }

func validateID(id string) error {
	if id == "" || id == "." || id == ".." || !idRegexp.MatchString(id) {
		return fmt.Errorf("%q: %w", id, ErrInvalidID)
	}
	return nil
}

// Load opens the container id.
func (r *Runtime) Load(id string) (*Container, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	dir := filepath.Join(r.root, id)
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("container %s: %w", id, ErrNotExist)
		}
		return nil, fmt.Errorf("read state of %s: %w", id, err)
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("decode state of %s: %w", id, err)
	}
	return &Container{rt: r, dir: dir, rec: rec}, nil
}

// List returns every container under the root, sorted by id.
func (r *Runtime) List() ([]*Container, error) {
	ents, err := os.ReadDir(r.root)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", r.root, err)
	}
	var out []*Container
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		c, err := r.Load(e.Name())
		if err != nil {
			// A container being created has no state file yet, or one
			// being deleted lost it: neither is listed.
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rec.ID < out[j].rec.ID })
	return out, nil
}
