package procfs

import (
	"fmt"
	"os"
	"strconv"
)

func read(pid int, name string) ([]byte, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("read /proc/%d/%s: %w", pid, name, err)
	}
	return data, nil
}

// ReadSmaps returns the mappings of pid with their VmFlags.
func ReadSmaps(pid int) ([]Mapping, error) {
	data, err := read(pid, "smaps")
	if err != nil {
		return nil, err
	}
	return ParseMaps(data)
}

// ReadMaps returns the mappings of pid (without VmFlags: cheaper than smaps).
func ReadMaps(pid int) ([]Mapping, error) {
	data, err := read(pid, "maps")
	if err != nil {
		return nil, err
	}
	return ParseMaps(data)
}

// ReadStatus parses /proc/PID/status (pid may be a TID).
func ReadStatus(pid int) (*Status, error) {
	data, err := read(pid, "status")
	if err != nil {
		return nil, err
	}
	return ParseStatus(data)
}

// ReadStat parses /proc/PID/stat.
func ReadStat(pid int) (*Stat, error) {
	data, err := read(pid, "stat")
	if err != nil {
		return nil, err
	}
	return ParseStat(data)
}

// ReadFdinfo parses /proc/PID/fdinfo/FD.
func ReadFdinfo(pid, fd int) (*Fdinfo, error) {
	data, err := read(pid, "fdinfo/"+strconv.Itoa(fd))
	if err != nil {
		return nil, err
	}
	return ParseFdinfo(data)
}
