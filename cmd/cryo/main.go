// Command cryo is a runc-compatible OCI runtime with a native checkpoint/restore engine.
package main

import (
	"fmt"
	"os"
)

// version is set at link time by the Makefile.
var version = "dev"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "-v") {
		fmt.Printf("cryo version %s\n", version)
		return
	}
	fmt.Fprintln(os.Stderr, "cryo: no command given")
	os.Exit(1)
}
