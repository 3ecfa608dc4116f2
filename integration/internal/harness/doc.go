// Package harness builds the binaries the integration tests drive (containerd, ctr, the runc
// shim and nerdctl at pinned versions, plus our own cryo binaries), runs private containerd
// daemons and builds OCI images locally. Nothing here talks to a registry.
package harness
