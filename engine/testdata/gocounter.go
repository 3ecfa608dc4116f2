// gocounter is the Go workload of the engine tests: goroutines on several
// threads, the runtime's epoll/eventfd netpoller, timers, a signal handler
// (signal.Notify) and 8 MiB of heap holding a pattern.
//
// argv[1]: status file, rewritten with "<ticks> <work> <heap ok> <usr1> <pid>".
package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	var work atomic.Int64
	for i := 0; i < 4; i++ {
		go func() {
			for {
				work.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	tick := time.NewTicker(2 * time.Millisecond)
	ticks, usr1, ok := 0, 0, 1
	f, err := os.OpenFile(os.Args[1], os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		panic(err)
	}
	for {
		select {
		case <-tick.C:
			ticks++
		case <-sig:
			usr1++
		}
		if ticks%50 == 0 {
			for i := 0; i < len(data); i += 4093 {
				if data[i] != byte(i*7+3) {
					ok = 0
				}
			}
		}
		f.WriteAt([]byte(fmt.Sprintf("%d %d %d %d %d\n", ticks, work.Load(), ok, usr1, os.Getpid())), 0)
	}
}
