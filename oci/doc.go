// Package oci is cryo's leaf package for OCI formats: the bundle's
// config.json (spec.go) and the checkpoint image (this documentation), with
// its media types and annotations. It depends on the standard library,
// runtime-spec, image-spec and go-digest only, and is portable (the few
// host probes live in _linux.go / _unix.go files).
//
// # The checkpoint image
//
// A checkpoint is an OCI image layout, as a directory or a tar archive of
// one:
//
//	oci-layout              {"imageLayoutVersion":"1.0.0"}
//	index.json              one manifest descriptor, artifactType ArtifactType,
//	                        annotations io.cryo.checkpoint.{name,container,created}
//	                        and org.opencontainers.image.ref.name (= name)
//	blobs/sha256/<hex>      manifest, config and layers
//
// The manifest (artifactType ArtifactType) has a MediaTypeConfig config, a
// Config in JSON, and these layers, base first:
//
//	MediaTypeState       tar of the engine's record files; annotation
//	                     io.cryo.checkpoint.path: the directory it unpacks
//	                     into ("." for the image's own records)
//	MediaTypePages       raw bytes of an engine pages file (pages-*.img), or
//	                     of a chunk of one; io.cryo.checkpoint.path names the
//	                     file, io.cryo.checkpoint.offset where the chunk goes
//	MediaTypeRootfsDiff  optional tar of the container's rootfs changes
//
// MediaTypePagesZstd is reserved: this version refuses it (ErrUnsupported).
//
// # Writing
//
// WriteCheckpoint takes the directory the engine dumped into. Each top-level
// pages-*.img file becomes one pages layer, hardlinked into blobs/sha256
// (copied across filesystems), unless WriteOptions.ChunkSize splits it; all
// other files and directories go into the state tar, which is deterministic:
// walk order, modes 0600/0700, owner 0, times at the epoch, so the same dump
// gives the same digests. Blobs are written under temporary names and
// renamed to their digest; index.json is written last, through a rename: a
// layout without index.json is no image. Directories are 0700, files 0600;
// an existing non-empty destination is refused (ErrExists).
//
// sha256 is sequential within a blob: one pages file hashes on one core,
// at write and at every open (about 1.5 GB/s with SHA-NI). Several pages
// files hash in parallel on all cores, and still hardlink both ways: an
// engine that bounds its pages files (say to 64 MiB) gets both. Chunking
// (ChunkSize) gets the parallelism for a big file at the price of a copy at
// write and at Extract. An engine that hashes its pages while writing them
// may pass the digests (WriteOptions.Digests): packing is then a hardlink.
//
// # Incremental checkpoints
//
// With WriteOptions.Parent, the manifest lists first the parent's state and
// pages layers with their paths moved under "parent/" (the grandparent's,
// already under "parent/" in the parent, end under "parent/parent/"), then
// the image's own layers. The parent's blobs are hardlinked (or copied and
// verified) into the new layout, which stands alone; content addressing
// shares unchanged layers on disk and in a registry. Config.Parent is the
// parent's manifest digest; the manifests and configs of the chain are
// copied too, so it resolves. Extract lays the chain out as the engine
// finds it: own files at the top, the parent's in parent/, and so on.
//
// # Reading
//
// OpenCheckpoint parses everything strictly and verifies every blob against
// its descriptor's size and digest before it returns (a *BlobError names
// the blob and the digest found); state tars may hold only regular files and
// directories with clean relative names, each once, never inside another
// generation's directory nor over a pages file (ErrUnsafeEntry). An archive
// is unpacked into a private temporary directory first, accepting only the
// names of a layout. Extract then lays the engine files out in a new 0700
// directory: state tars are hashed again as they are unpacked, whole pages
// files are hardlinks to the verified blobs (checked to be the very files
// verified), chunked ones are assembled by in-kernel copies. ExtractOpen
// hands the whole pages files over open instead of linking them.
//
// # The verified-blob cache
//
// OpenCheckpointWith with a VerifyCache (root only) takes as verified,
// without hashing, a blob that this host wrote (WriteOptions.Cache) or
// verified since it booted and whose file is exactly as it was then
// (device, inode, size, mtime, ctime): see verifycache.go for the design
// and why it is sound. Everything else is hashed in full as above;
// OpenOptions.Full hashes everything. OpenCheckpoint, Inspect and archives
// never use it.
package oci
