// goheap is a static Go program for the workload tests: a 128 MiB heap of
// random bytes with a known checksum, a ring of goroutines passing a token
// over channels, a ticker, a self-rearming timer, and a garbage-producing
// goroutine that forces collections. It writes
// "ring ticks timers numgc heapsum" to /tmp/go.status every 20 ms; when
// /tmp/go.check appears it recomputes the checksum of the heap it holds and
// writes it to /tmp/go.check.out.
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

var heap [][]byte

func heapsum() string {
	h := sha256.New()
	for _, c := range heap {
		h.Write(c)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func put(path, text string) {
	if err := os.WriteFile(path+".new", []byte(text), 0o644); err != nil {
		panic(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		panic(err)
	}
}

func main() {
	for i := 0; i < 128; i++ {
		c := make([]byte, 1<<20)
		if _, err := rand.Read(c); err != nil {
			panic(err)
		}
		heap = append(heap, c)
	}
	sum := heapsum()

	// A ring of 16 goroutines passing a token: each pass is one count.
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

	var timers atomic.Int64
	var rearm func()
	rearm = func() {
		timers.Add(1)
		time.AfterFunc(3*time.Millisecond, rearm)
	}
	time.AfterFunc(3*time.Millisecond, rearm)

	var sink atomic.Pointer[[]byte]
	go func() {
		for i := 0; ; i++ {
			b := make([]byte, 64<<10)
			b[i%len(b)] = byte(i)
			sink.Store(&b)
			if i%200 == 0 {
				runtime.GC()
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()

	var ms runtime.MemStats
	for {
		runtime.ReadMemStats(&ms)
		put("/tmp/go.status", fmt.Sprintf("%d %d %d %d %s\n", ring.Load(), ticks.Load(), timers.Load(), ms.NumGC, sum))
		if _, err := os.Stat("/tmp/go.check"); err == nil {
			os.Remove("/tmp/go.check")
			put("/tmp/go.check.out", heapsum()+"\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
