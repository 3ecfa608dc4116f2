package engine

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryo-run/cryo/integration/testutil"
)

// TestTCPEstablishedOutsidePeer checkpoints a process whose TCP connection
// goes to a peer outside the tree (this test, in the same network
// namespace): the connection is saved with TCP_REPAIR, left silent while the
// process is gone (the peer sees no FIN or RST), and after restore the peer
// and the process go on talking over the same connection.
func TestTCPEstablishedOutsidePeer(t *testing.T) {
	testutil.RequiresRoot(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bin := buildC(t, "tcppeer")
	dir := t.TempDir()
	fz := newCgroupFreezer(t)
	port := ln.Addr().(*net.TCPAddr).Port
	cmd := startInNewPidns(t, fz, bin, strconv.Itoa(port), dir)
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	exchange := func(n int) {
		t.Helper()
		if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(conn, "%d\n", n); err != nil {
			t.Fatalf("send %d: %v", n, err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("answer to %d: %v", n, err)
		}
		if got := strings.TrimSpace(line); got != strconv.Itoa(n+1) {
			t.Fatalf("answer to %d: %q, want %d", n, got, n+1)
		}
	}
	for n := 1; n <= 10; n++ {
		exchange(n * 10)
	}
	img := filepath.Join(dir, "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: cmd.Process.Pid, Freezer: fz, ImageDir: img, TCPEstablished: true}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	_ = cmd.Wait()
	stub := startStub(t)
	if _, err := Restore(context.Background(), RestoreOptions{ImageDir: img, Pid: stub.Process.Pid}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	// The same connection, from the peer's side: no reconnect happened.
	for n := 11; n <= 20; n++ {
		exchange(n * 10)
	}
	if got, want := conn.LocalAddr().String(), fmt.Sprintf("127.0.0.1:%d", port); got != want {
		t.Fatalf("peer's local address %s, want %s", got, want)
	}
}
