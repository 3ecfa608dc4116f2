package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Files the shim keeps in the bundle so that a "delete" process can report on a container
// whose shim is gone.
const (
	initPidFile = "init.pid"
	exitFile    = "cryo-exit.json"
)

// exitRecord is the init process's exit, written when the shim sees it.
type exitRecord struct {
	Pid    int       `json:"pid"`
	Status int       `json:"status"`
	At     time.Time `json:"at"`
}

func writeExit(bundle string, rec exitRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(bundle, exitFile), data)
}

func readExit(bundle string) (exitRecord, error) {
	var rec exitRecord
	data, err := os.ReadFile(filepath.Join(bundle, exitFile))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("parse %s: %w", exitFile, err)
	}
	return rec, nil
}

func writeInitPid(bundle string, pid int) error {
	return writeFileAtomic(filepath.Join(bundle, initPidFile), []byte(strconv.Itoa(pid)))
}

func readInitPid(bundle string) int {
	data, err := os.ReadFile(filepath.Join(bundle, initPidFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// writeFileAtomic writes data to a temporary file beside p and renames it over p.
func writeFileAtomic(p string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), p)
}
