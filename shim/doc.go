// Package shim is containerd's task service for the cryo runtime (task API v3 over ttrpc),
// and the manager that containerd's shim bootstrap protocol drives. It is the only package of
// cryo that speaks containerd's API; each RPC maps onto the runtime package.
package shim
