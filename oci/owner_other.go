//go:build !unix

package oci

import "os"

// fileOwner returns the uid owning the file; unknown here, so only root
// may remove images.
func fileOwner(os.FileInfo) (int, bool) { return -1, false }
