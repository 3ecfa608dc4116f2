package sockdiag

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestUnixSocketpair(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := unix.Write(fds[0], []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Shutdown(fds[0], unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	var st [2]unix.Stat_t
	for i := range fds {
		if err := unix.Fstat(fds[i], &st[i]); err != nil {
			t.Fatal(err)
		}
	}
	socks, err := Unix("")
	if err != nil {
		t.Fatal(err)
	}
	a, b := socks[uint32(st[0].Ino)], socks[uint32(st[1].Ino)]
	if a.Peer != uint32(st[1].Ino) || b.Peer != uint32(st[0].Ino) {
		t.Fatalf("peers %d, %d; want %d, %d", a.Peer, b.Peer, st[1].Ino, st[0].Ino)
	}
	if b.RQueue != 5 || a.Type != unix.SOCK_STREAM || a.Shutdown != 2 {
		t.Fatalf("got %+v and %+v", a, b)
	}
}

func FuzzParseUnix(f *testing.F) {
	f.Add([]byte{1, 1, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 2, 0, 9, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = parseUnix(b) })
}
