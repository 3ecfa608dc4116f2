// gohttp is an HTTP server for the engine tests: it listens on 127.0.0.1
// (a port the kernel picks, written to argv[1]) and answers
// "<requests served> <ticks>" where a goroutine ticks every millisecond.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	var ticks, served atomic.Int64
	go func() {
		for {
			ticks.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %d", served.Add(1), ticks.Load())
	})
	if err := os.WriteFile(os.Args[1], []byte(fmt.Sprint(l.Addr().(*net.TCPAddr).Port)), 0o644); err != nil {
		panic(err)
	}
	srv := &http.Server{DisableGeneralOptionsHandler: true}
	srv.SetKeepAlivesEnabled(false)
	panic(srv.Serve(l))
}
