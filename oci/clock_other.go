//go:build !linux

package oci

import (
	"fmt"
	"runtime"
)

// ReadClocks reads the wall, monotonic and boot-time clocks; Linux only.
func ReadClocks() (Clocks, error) {
	return Clocks{}, fmt.Errorf("%w: reading CLOCK_BOOTTIME on %s", ErrUnsupported, runtime.GOOS)
}
