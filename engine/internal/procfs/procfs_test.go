package procfs

import (
	"errors"
	"testing"
)

const smaps = `00400000-00401000 r-xp 00000000 fd:01 1234                               /usr/bin/my prog (deleted)
Size:                  4 kB
VmFlags: rd ex mr mw me
7ffd1000-7ffd3000 rw-p 00000000 00:00 0                                  [stack]
Size:                  8 kB
VmFlags: rd wr mr mw me gd ac
7ffe0000-7ffe1000 rw-s 00001000 00:01 99                                 /dev/zero (deleted)
`

func TestParseMaps(t *testing.T) {
	m, err := ParseMaps([]byte(smaps))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 {
		t.Fatalf("got %d mappings, want 3", len(m))
	}
	if m[0].Path != "/usr/bin/my prog" || !m[0].Deleted || !m[0].Exec || m[0].Write || m[0].Inode != 1234 || m[0].Major != 0xfd {
		t.Errorf("mapping 0: %+v", m[0])
	}
	if m[1].Path != "[stack]" || !m[1].HasFlag("gd") || m[1].Start != 0x7ffd1000 || m[1].End != 0x7ffd3000 {
		t.Errorf("mapping 1: %+v", m[1])
	}
	if !m[2].Shared || m[2].Offset != 0x1000 || !m[2].Deleted {
		t.Errorf("mapping 2: %+v", m[2])
	}
	if _, err := ParseMaps([]byte("zz-1 rw-p 0 0:0 0\n")); !errors.Is(err, ErrParse) {
		t.Errorf("got %v, want ErrParse", err)
	}
}

func TestParseStatus(t *testing.T) {
	s, err := ParseStatus([]byte("Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t77\nPPid:\t5\nUid:\t1\t2\t3\t4\nGid:\t0\t0\t0\t0\nGroups:\t10 20 \nNSpid:\t77\t1\nNSsid:\t77\t1\nThreads:\t1\nSigBlk:\t0000000000010000\nNoNewPrivs:\t1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Umask != 0o22 || s.Tgid != 77 || s.NSpid[1] != 1 || s.Uid[3] != 4 || len(s.Groups) != 2 || s.SigBlk != 1<<16 || !s.NoNewPrivs || s.State != 'S' {
		t.Errorf("got %+v", s)
	}
}

func TestParseStat(t *testing.T) {
	line := "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 100 1000 50 18446744073709551615 4194304 4196000 140737000000000 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 6000000 6000100 7000000 140737000001000 140737000001100 140737000001100 140737000001200 0\n"
	s, err := ParseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.Comm != "a b) c)" || s.PPid != 1 || s.StartCode != 4194304 || s.StartBrk != 7000000 || s.EnvEnd != 140737000001200 {
		t.Errorf("got %+v", s)
	}
}

func TestParseFdinfo(t *testing.T) {
	fi, err := ParseFdinfo([]byte("pos:\t12345\nflags:\t02100002\nmnt_id:\t30\nino:\t99\neventfd-count: 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Pos != 12345 || fi.Flags != 0o2100002 || fi.MntID != 30 || fi.Ino != 99 || fi.Extra["eventfd-count"] != "5" {
		t.Errorf("got %+v", fi)
	}
}

func FuzzParseMaps(f *testing.F) {
	f.Add([]byte(smaps))
	f.Fuzz(func(t *testing.T, data []byte) {
		maps, err := ParseMaps(data)
		if err != nil {
			return
		}
		for _, m := range maps {
			if m.End < m.Start {
				t.Fatalf("end before start: %+v", m)
			}
		}
	})
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 1 1 1 1 1 1 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 1 1 1 1 1 1 1 0"))
	f.Fuzz(func(t *testing.T, data []byte) { _, _ = ParseStat(data) })
}

func FuzzParseStatusFdinfo(f *testing.F) {
	f.Add([]byte("Tgid:\t1\nNSpid:\t1\npos:\t0\nflags:\t0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseStatus(data)
		_, _ = ParseFdinfo(data)
	})
}

func TestEpollAndTimerfd(t *testing.T) {
	fi, err := ParseFdinfo([]byte("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\ntfd:        7 events:       19 data:                7  pos:0 ino:1a sdev:f\ntfd:       10 events: 80000019 data:     7f0000000001  pos:0 ino:1b sdev:f\n"))
	if err != nil {
		t.Fatal(err)
	}
	tg, err := EpollTargets(fi.Extra["tfd"])
	if err != nil {
		t.Fatal(err)
	}
	if len(tg) != 2 || tg[0].Fd != 7 || tg[0].Events != 0x19 || tg[1].Events != 0x80000019 || tg[1].Data != 0x7f0000000001 {
		t.Errorf("got %+v", tg)
	}
	fi, err = ParseFdinfo([]byte("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\nclockid: 1\nticks: 3\nsettime flags: 01\nit_value: (0, 5000)\nit_interval: (2, 7)\n"))
	if err != nil {
		t.Fatal(err)
	}
	tf, err := ParseTimerfd(fi)
	if err != nil {
		t.Fatal(err)
	}
	if tf.Clock != 1 || tf.Ticks != 3 || tf.SettimeFlags != 1 || tf.ValueNsec != 5000 || tf.IntervalSec != 2 || tf.IntervNsec != 7 {
		t.Errorf("got %+v", tf)
	}
}

func TestParseTimers(t *testing.T) {
	got, err := ParseTimers([]byte("ID: 1\nsignal: 14/0000000000000000\nnotify: signal/pid.6424\nClockID: 0\nID: 0\nsignal: 10/0000000000001234\nnotify: thread/tid.77\nClockID: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != 1 || got[0].Signo != 14 || got[1].Value != 0x1234 || got[1].Notify != "thread" || got[1].Pid != 77 || got[1].Clock != 1 {
		t.Errorf("got %+v", got)
	}
}

func FuzzParseTimers(f *testing.F) {
	f.Add([]byte("ID: 1\nsignal: 14/0\nnotify: signal/pid.1\nClockID: 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) { _, _ = ParseTimers(data) })
}
