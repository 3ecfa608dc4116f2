package oci

import (
	"os"
	"strings"
	"sync"
	"syscall"

	digest "github.com/opencontainers/go-digest"
)

// Filesystems whose timestamps the kernel keeps (statfs f_type).
var trustedFilesystems = map[int64]bool{
	0xEF53:     true, // ext2/3/4
	0x58465342: true, // xfs
	0x9123683E: true, // btrfs
	0x01021994: true, // tmpfs
	0xF2F52010: true, // f2fs
}

// blobIdentity is the cache entry that describes the open blob f (fi its
// fstat) as holding d, or false when the file may not be cached: not a
// regular file owned by root without group or other write permission, or
// on a filesystem that is not trusted, or no boot id.
func blobIdentity(d digest.Digest, f *os.File, fi os.FileInfo) (*verifiedEntry, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return nil, false
	}
	var sfs syscall.Statfs_t
	if err := syscall.Fstatfs(int(f.Fd()), &sfs); err != nil || !trustedFilesystems[int64(sfs.Type)] {
		return nil, false
	}
	boot, err := bootID()
	if err != nil {
		return nil, false
	}
	return &verifiedEntry{
		Digest: d, Dev: uint64(st.Dev), Ino: uint64(st.Ino), Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(), BootID: boot,
	}, true
}

var bootID = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
})

func openNoFollow(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}

// sameIdentity says whether two fstats of a file show the same file,
// unchanged (device, inode, size, mtime and ctime).
func sameIdentity(a, b os.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Dev == sb.Dev && sa.Ino == sb.Ino && sa.Size == sb.Size &&
		sa.Mtim == sb.Mtim && sa.Ctim == sb.Ctim
}
