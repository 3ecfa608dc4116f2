// benchgoheap is the Go workload of the runtime benchmarks
// (runtime/bench5_linux_test.go), built static with CGO_ENABLED=0:
//
//	benchgoheap MIB
//
// It allocates MIB MiB of live heap in 1 MiB chunks filled with
// pseudo-random words, writes their checksum to /tmp/sum and "ready" to
// /tmp/ready, and keeps goroutines running: a ring of 16 passing a token
// over channels and a ticker. Like benchhog's stall mode, one goroutine
// reads CLOCK_MONOTONIC every ~100 us and appends every gap over 1 ms to
// /tmp/gaps as "<end_ns> <gap_ns>\n".
//
// When /tmp/check appears it removes it, waits for the ring to make 100
// more passes and the ticker 5 more ticks, recomputes the heap checksum and
// writes "<checksum> <ring passes> <ticks>\n" to /tmp/check.out.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

var heap [][]uint64

func fill(seed uint64) {
	x := seed | 1
	for _, c := range heap {
		for i := range c {
			// xorshift64*
			x ^= x >> 12
			x ^= x << 25
			x ^= x >> 27
			c[i] = x * 0x2545f4914f6cdd1d
		}
	}
}

func checksum() string {
	var h uint64 = 0xcbf29ce484222325
	for _, c := range heap {
		for _, w := range c {
			h = (h ^ w) * 0x100000001b3
			h ^= h >> 29
		}
	}
	return fmt.Sprintf("%016x", h)
}

func put(path, text string) {
	if err := os.WriteFile(path+".new", []byte(text), 0o644); err != nil {
		panic(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		panic(err)
	}
}

func monotonic() int64 {
	var ts syscall.Timespec
	// CLOCK_MONOTONIC, the host's clock (the container has no time offset).
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		panic(e)
	}
	return ts.Nano()
}

func main() {
	mib, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	heap = make([][]uint64, mib)
	for i := range heap {
		heap[i] = make([]uint64, (1<<20)/8)
	}
	fill(uint64(time.Now().UnixNano()))
	put("/tmp/sum", checksum()+"\n")

	var ring atomic.Int64
	const n = 16
	chans := make([]chan int64, n)
	for i := range chans {
		chans[i] = make(chan int64)
	}
	for i := 0; i < n; i++ {
		go func(in, out chan int64) {
			for v := range in {
				ring.Add(1)
				if v%64 == 0 {
					time.Sleep(time.Millisecond)
				}
				out <- v + 1
			}
		}(chans[i], chans[(i+1)%n])
	}
	chans[0] <- 1

	var ticks atomic.Int64
	go func() {
		t := time.NewTicker(5 * time.Millisecond)
		for range t.C {
			ticks.Add(1)
		}
	}()

	gaps, err := os.OpenFile("/tmp/gaps", os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_TRUNC, 0o644)
	if err != nil {
		panic(err)
	}
	go func() {
		prev := monotonic()
		for {
			time.Sleep(100 * time.Microsecond)
			t := monotonic()
			if t-prev > 1e6 {
				if _, err := fmt.Fprintf(gaps, "%d %d\n", t, t-prev); err != nil {
					panic(err)
				}
			}
			prev = t
		}
	}()
	put("/tmp/ready", "ready")

	for {
		time.Sleep(50 * time.Millisecond)
		if _, err := os.Stat("/tmp/check"); err != nil {
			continue
		}
		os.Remove("/tmp/check")
		r0, t0 := ring.Load(), ticks.Load()
		deadline := time.Now().Add(20 * time.Second)
		for (ring.Load() < r0+100 || ticks.Load() < t0+5) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		put("/tmp/check.out", fmt.Sprintf("%s %d %d\n", checksum(), ring.Load()-r0, ticks.Load()-t0))
	}
}
