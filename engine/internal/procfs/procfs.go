// Package procfs parses the /proc files the checkpoint engine reads: maps,
// smaps (VmFlags), status, stat and fdinfo. The parsers take the file
// contents and are pure, so they can be fuzzed; readers for a live PID sit in
// procfs_linux.go.
package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrParse is returned (wrapped) for content that does not parse.
var ErrParse = errors.New("unparsable proc file")

// Mapping is one line of /proc/PID/maps, plus the VmFlags of smaps when known.
type Mapping struct {
	Start, End uint64
	Read       bool
	Write      bool
	Exec       bool
	Shared     bool
	Offset     uint64
	Major      uint32
	Minor      uint32
	Inode      uint64
	// Path is the pathname column: a path, "[heap]", "[vdso]", "" ...
	Path string
	// Deleted is set when the path ended with " (deleted)" (removed from Path).
	Deleted bool
	// VmFlags are the two-letter flags of smaps ("gd", "sh", "dd", ...).
	VmFlags []string
}

// HasFlag reports whether smaps listed the VmFlag f for the mapping.
func (m *Mapping) HasFlag(f string) bool {
	for _, x := range m.VmFlags {
		if x == f {
			return true
		}
	}
	return false
}

func parseMapLine(line string) (Mapping, error) {
	var m Mapping
	fields := strings.Fields(line)
	if len(fields) < 5 {
		return m, fmt.Errorf("%w: maps line %q", ErrParse, line)
	}
	rng := strings.SplitN(fields[0], "-", 2)
	if len(rng) != 2 {
		return m, fmt.Errorf("%w: maps range %q", ErrParse, fields[0])
	}
	var err error
	if m.Start, err = strconv.ParseUint(rng[0], 16, 64); err != nil {
		return m, fmt.Errorf("%w: maps start %q", ErrParse, rng[0])
	}
	if m.End, err = strconv.ParseUint(rng[1], 16, 64); err != nil || m.End < m.Start {
		return m, fmt.Errorf("%w: maps end %q", ErrParse, rng[1])
	}
	perm := fields[1]
	if len(perm) != 4 {
		return m, fmt.Errorf("%w: maps perms %q", ErrParse, perm)
	}
	m.Read, m.Write, m.Exec, m.Shared = perm[0] == 'r', perm[1] == 'w', perm[2] == 'x', perm[3] == 's'
	if m.Offset, err = strconv.ParseUint(fields[2], 16, 64); err != nil {
		return m, fmt.Errorf("%w: maps offset %q", ErrParse, fields[2])
	}
	dev := strings.SplitN(fields[3], ":", 2)
	if len(dev) != 2 {
		return m, fmt.Errorf("%w: maps dev %q", ErrParse, fields[3])
	}
	maj, err1 := strconv.ParseUint(dev[0], 16, 32)
	min, err2 := strconv.ParseUint(dev[1], 16, 32)
	if err1 != nil || err2 != nil {
		return m, fmt.Errorf("%w: maps dev %q", ErrParse, fields[3])
	}
	m.Major, m.Minor = uint32(maj), uint32(min)
	if m.Inode, err = strconv.ParseUint(fields[4], 10, 64); err != nil {
		return m, fmt.Errorf("%w: maps inode %q", ErrParse, fields[4])
	}
	// The path is what follows the inode column; it may hold spaces.
	rest := line
	for i := 0; i < 5; i++ {
		rest = strings.TrimLeft(rest, " \t")
		j := strings.IndexAny(rest, " \t")
		if j < 0 {
			rest = ""
			break
		}
		rest = rest[j:]
	}
	m.Path = strings.TrimLeft(rest, " \t")
	if p, ok := strings.CutSuffix(m.Path, " (deleted)"); ok {
		m.Path, m.Deleted = p, true
	}
	return m, nil
}

// ParseMaps parses /proc/PID/maps or /proc/PID/smaps (then VmFlags are filled).
func ParseMaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		// smaps detail lines are "Key:   value"; a mapping line starts with a hex range.
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.Contains(k, " ") && !strings.Contains(k, "-") {
			if k == "VmFlags" && len(out) > 0 {
				out[len(out)-1].VmFlags = strings.Fields(v)
			}
			continue
		}
		m, err := parseMapLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrParse, err)
	}
	return out, nil
}

// Status holds the fields of /proc/PID/status the engine uses.
type Status struct {
	Name    string
	State   byte
	Tgid    int
	PPid    int
	Threads int
	Umask   uint32
	// NSpid, NStgid, NSpgid, NSsid list the ids from the outermost to the
	// innermost PID namespace.
	NSpid, NStgid, NSpgid, NSsid []int
	Uid, Gid                     [4]uint32
	Groups                       []uint32
	SigPnd, ShdPnd               uint64
	SigBlk, SigIgn, SigCgt       uint64
	NoNewPrivs                   bool
	// Capability sets.
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	// Seccomp is the seccomp mode (0 none, 1 strict, 2 filter).
	Seccomp int
}

func ints(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Fields(v) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func ids4(v string) ([4]uint32, error) {
	var out [4]uint32
	f := strings.Fields(v)
	if len(f) != 4 {
		return out, fmt.Errorf("want 4 ids, got %q", v)
	}
	for i := range f {
		n, err := strconv.ParseUint(f[i], 10, 32)
		if err != nil {
			return out, err
		}
		out[i] = uint32(n)
	}
	return out, nil
}

// ParseStatus parses /proc/PID/status.
func ParseStatus(data []byte) (*Status, error) {
	s := &Status{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "Name":
			s.Name = v
		case "State":
			if v == "" {
				err = errors.New("empty state")
			} else {
				s.State = v[0]
			}
		case "Tgid":
			s.Tgid, err = strconv.Atoi(v)
		case "PPid":
			s.PPid, err = strconv.Atoi(v)
		case "Threads":
			s.Threads, err = strconv.Atoi(v)
		case "Umask":
			var u uint64
			u, err = strconv.ParseUint(v, 8, 32)
			s.Umask = uint32(u)
		case "NSpid":
			s.NSpid, err = ints(v)
		case "NStgid":
			s.NStgid, err = ints(v)
		case "NSpgid":
			s.NSpgid, err = ints(v)
		case "NSsid":
			s.NSsid, err = ints(v)
		case "Uid":
			s.Uid, err = ids4(v)
		case "Gid":
			s.Gid, err = ids4(v)
		case "Groups":
			var g []int
			g, err = ints(v)
			for _, x := range g {
				s.Groups = append(s.Groups, uint32(x))
			}
		case "SigPnd":
			s.SigPnd, err = strconv.ParseUint(v, 16, 64)
		case "ShdPnd":
			s.ShdPnd, err = strconv.ParseUint(v, 16, 64)
		case "SigBlk":
			s.SigBlk, err = strconv.ParseUint(v, 16, 64)
		case "SigIgn":
			s.SigIgn, err = strconv.ParseUint(v, 16, 64)
		case "SigCgt":
			s.SigCgt, err = strconv.ParseUint(v, 16, 64)
		case "CapInh":
			s.CapInh, err = strconv.ParseUint(v, 16, 64)
		case "CapPrm":
			s.CapPrm, err = strconv.ParseUint(v, 16, 64)
		case "CapEff":
			s.CapEff, err = strconv.ParseUint(v, 16, 64)
		case "CapBnd":
			s.CapBnd, err = strconv.ParseUint(v, 16, 64)
		case "CapAmb":
			s.CapAmb, err = strconv.ParseUint(v, 16, 64)
		case "NoNewPrivs":
			s.NoNewPrivs = v == "1"
		case "Seccomp":
			s.Seccomp, err = strconv.Atoi(v)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: status %s: %v", ErrParse, k, err)
		}
	}
	if len(s.NSpid) == 0 || s.Tgid == 0 {
		return nil, fmt.Errorf("%w: status without Tgid/NSpid", ErrParse)
	}
	return s, nil
}

// Stat holds the fields of /proc/PID/stat the engine uses.
type Stat struct {
	Comm                string
	State               byte
	PPid, Pgrp, Session int
	// TtyNr is the controlling terminal (major<<8 | minor, with the high
	// minor bits at 20), Tpgid its foreground process group.
	TtyNr, Tpgid                                 int
	StartCode, EndCode, StartStack               uint64
	StartData, EndData, StartBrk                 uint64
	ArgStart, ArgEnd, EnvStart, EnvEnd, ExitCode uint64
}

// ParseStat parses /proc/PID/stat (the comm field may hold spaces and parentheses).
func ParseStat(data []byte) (*Stat, error) {
	s := string(data)
	open := strings.IndexByte(s, '(')
	close := strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return nil, fmt.Errorf("%w: stat without comm", ErrParse)
	}
	st := &Stat{Comm: s[open+1 : close]}
	f := strings.Fields(s[close+1:])
	// f[0] is field 3 (state) of proc(5).
	field := func(n int) uint64 {
		if n-3 >= len(f) {
			return 0
		}
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	if len(f) < 50 || len(f[0]) != 1 {
		return nil, fmt.Errorf("%w: stat has %d fields", ErrParse, len(f)+2)
	}
	st.State = f[0][0]
	sint := func(n int) int { v, _ := strconv.Atoi(f[n-3]); return v }
	st.PPid, st.Pgrp, st.Session = sint(4), sint(5), sint(6)
	st.TtyNr, st.Tpgid = sint(7), sint(8)
	st.StartCode, st.EndCode, st.StartStack = field(26), field(27), field(28)
	st.StartData, st.EndData, st.StartBrk = field(45), field(46), field(47)
	st.ArgStart, st.ArgEnd, st.EnvStart, st.EnvEnd = field(48), field(49), field(50), field(51)
	st.ExitCode = field(52)
	return st, nil
}

// TtyDev splits a stat tty_nr into major and minor numbers.
func TtyDev(nr int) (major, minor uint32) {
	return uint32(nr>>8) & 0xfff, uint32(nr&0xff) | uint32(nr>>12)&0xfff00
}

// Fdinfo holds /proc/PID/fdinfo/N.
type Fdinfo struct {
	Pos   int64
	Flags int
	MntID int
	Ino   uint64
	// Extra keeps every other line (eventfd-count, tfd, inotify, ...).
	Extra map[string]string
}

// ParseFdinfo parses /proc/PID/fdinfo/N.
func ParseFdinfo(data []byte) (*Fdinfo, error) {
	fi := &Fdinfo{Extra: map[string]string{}}
	seen := 0
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "pos":
			fi.Pos, err = strconv.ParseInt(v, 10, 64)
			seen++
		case "flags":
			var fl uint64
			fl, err = strconv.ParseUint(v, 8, 32)
			fi.Flags = int(fl)
			seen++
		case "mnt_id":
			fi.MntID, err = strconv.Atoi(v)
		case "ino":
			fi.Ino, err = strconv.ParseUint(v, 10, 64)
		default:
			if _, dup := fi.Extra[k]; dup {
				fi.Extra[k] += "\n" + v
			} else {
				fi.Extra[k] = v
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: fdinfo %s: %v", ErrParse, k, err)
		}
	}
	if seen < 2 {
		return nil, fmt.Errorf("%w: fdinfo without pos/flags", ErrParse)
	}
	return fi, nil
}

// EpollTarget is one "tfd:" line of an epoll fdinfo.
type EpollTarget struct {
	Fd     int
	Events uint32
	Data   uint64
}

// EpollTargets parses the tfd lines of an epoll fdinfo (Fdinfo.Extra["tfd"]).
func EpollTargets(extra string) ([]EpollTarget, error) {
	var out []EpollTarget
	for _, line := range strings.Split(extra, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		// "7 events: 19 data: 7 pos:0 ino:... sdev:..." (the "tfd:" key was cut)
		if len(f) < 5 || f[1] != "events:" || f[3] != "data:" {
			return nil, fmt.Errorf("%w: epoll target %q", ErrParse, line)
		}
		fd, err1 := strconv.Atoi(f[0])
		ev, err2 := strconv.ParseUint(f[2], 16, 32)
		data, err3 := strconv.ParseUint(f[4], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%w: epoll target %q", ErrParse, line)
		}
		out = append(out, EpollTarget{Fd: fd, Events: uint32(ev), Data: data})
	}
	return out, nil
}

// Timerfd is the state of a timerfd from its fdinfo.
type Timerfd struct {
	Clock                   int
	Ticks                   uint64
	SettimeFlags            int
	ValueSec, ValueNsec     int64
	IntervalSec, IntervNsec int64
}

func pair(v string) (int64, int64, error) {
	v = strings.Trim(v, "() ")
	a, b, ok := strings.Cut(v, ",")
	if !ok {
		return 0, 0, fmt.Errorf("%w: pair %q", ErrParse, v)
	}
	x, err1 := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	y, err2 := strconv.ParseInt(strings.TrimSpace(b), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%w: pair %q", ErrParse, v)
	}
	return x, y, nil
}

// ParseTimerfd reads the timerfd lines of an fdinfo.
func ParseTimerfd(fi *Fdinfo) (*Timerfd, error) {
	var t Timerfd
	var err error
	if t.Clock, err = strconv.Atoi(fi.Extra["clockid"]); err != nil {
		return nil, fmt.Errorf("%w: timerfd clockid", ErrParse)
	}
	if t.Ticks, err = strconv.ParseUint(fi.Extra["ticks"], 10, 64); err != nil {
		return nil, fmt.Errorf("%w: timerfd ticks", ErrParse)
	}
	fl, err := strconv.ParseUint(fi.Extra["settime flags"], 8, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: timerfd flags", ErrParse)
	}
	t.SettimeFlags = int(fl)
	if t.ValueSec, t.ValueNsec, err = pair(fi.Extra["it_value"]); err != nil {
		return nil, err
	}
	if t.IntervalSec, t.IntervNsec, err = pair(fi.Extra["it_interval"]); err != nil {
		return nil, err
	}
	return &t, nil
}

// PosixTimer is one entry of /proc/PID/timers.
type PosixTimer struct {
	ID     int
	Signo  int
	Value  uint64
	Notify string // "signal", "thread" or "none"
	Pid    int    // the target process or thread, in the reader's PID namespace
	Clock  int
}

// ParseTimers parses /proc/PID/timers.
func ParseTimers(data []byte) ([]PosixTimer, error) {
	var out []PosixTimer
	var cur *PosixTimer
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "ID":
			out = append(out, PosixTimer{})
			cur = &out[len(out)-1]
			cur.ID, err = strconv.Atoi(v)
		case "signal":
			if cur == nil {
				return nil, fmt.Errorf("%w: timers: signal before ID", ErrParse)
			}
			sig, val, _ := strings.Cut(v, "/")
			if cur.Signo, err = strconv.Atoi(sig); err == nil {
				cur.Value, err = strconv.ParseUint(val, 16, 64)
			}
		case "notify":
			if cur == nil {
				return nil, fmt.Errorf("%w: timers: notify before ID", ErrParse)
			}
			how, target, _ := strings.Cut(v, "/")
			cur.Notify = how
			_, id, _ := strings.Cut(target, ".")
			cur.Pid, err = strconv.Atoi(id)
		case "ClockID":
			if cur == nil {
				return nil, fmt.Errorf("%w: timers: ClockID before ID", ErrParse)
			}
			cur.Clock, err = strconv.Atoi(v)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: timers %s: %v", ErrParse, k, err)
		}
	}
	return out, nil
}
