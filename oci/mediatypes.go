package oci

// Media types, annotation keys and names of the cryo checkpoint image. They are
// the contract of DESIGN.md ("The checkpoint image"): a checkpoint is an OCI
// image layout (directory, or .tar archive of one) whose index.json holds one
// manifest; the manifest's config is a Config and its layers are the engine's
// state records (one tar), its page data (raw blobs, one per pages file or per
// chunk of one) and, for a standalone runtime, the container's rootfs changes.
const (
	// ArtifactType is the artifactType of a checkpoint manifest.
	ArtifactType = "application/vnd.cryo.checkpoint.v1"

	// MediaTypeConfig is the media type of the config blob (a Config as JSON).
	MediaTypeConfig = "application/vnd.cryo.checkpoint.config.v1+json"
	// MediaTypeState is the media type of a state layer: an uncompressed tar
	// of the engine's record files (every file of the engine's image
	// directory but the pages files).
	MediaTypeState = "application/vnd.cryo.checkpoint.state.v1.tar"
	// MediaTypePages is the media type of a pages layer: raw page bytes, the
	// whole content (or one chunk) of an engine pages file.
	MediaTypePages = "application/vnd.cryo.checkpoint.pages.v1"
	// MediaTypePagesZstd is reserved for zstd-compressed pages layers. This
	// version neither writes nor reads it (reading one is ErrUnsupported).
	MediaTypePagesZstd = "application/vnd.cryo.checkpoint.pages.v1+zstd"
	// MediaTypeRootfsDiff is the media type of the rootfs changes layer
	// (the standard OCI uncompressed layer tar).
	MediaTypeRootfsDiff = "application/vnd.oci.image.layer.v1.tar"
)

// Annotations of the index.json entry and of the manifest.
const (
	// AnnotationName is the checkpoint's name.
	AnnotationName = "io.cryo.checkpoint.name"
	// AnnotationContainer is the id of the checkpointed container.
	AnnotationContainer = "io.cryo.checkpoint.container"
	// AnnotationCreated is when the checkpoint was taken (RFC 3339, UTC,
	// nanoseconds).
	AnnotationCreated = "io.cryo.checkpoint.created"
)

// Annotations of the layers: where Extract lays each layer out.
const (
	// AnnotationPath is, on a state layer, the directory (relative to the
	// extraction directory, "." for the image's own records) the tar is
	// unpacked into, and on a pages layer the file (relative path) its bytes
	// belong to. Layers inherited from a parent checkpoint carry the
	// parent's paths under "parent/" (grandparent: "parent/parent/", ...).
	AnnotationPath = "io.cryo.checkpoint.path"
	// AnnotationOffset is, on a pages layer, the byte offset of the layer's
	// bytes inside its file (decimal). A pages file is the concatenation of
	// its layers in offset order, without gaps; absent means 0.
	AnnotationOffset = "io.cryo.checkpoint.offset"
)

// FormatRevision is the revision of the checkpoint format this package writes
// (Config.FormatRevision). Readers refuse revisions newer than theirs.
const FormatRevision = 1

// ParentDir is the directory, relative to the extraction directory, where
// Extract lays out the parent checkpoint's files of an incremental checkpoint
// (its own parent goes to ParentDir/ParentDir, and so on).
const ParentDir = "parent"

// pagesPrefix and pagesSuffix delimit the engine's pages file names
// (pages-*.img at the top of the engine's image directory).
const (
	pagesPrefix = "pages-"
	pagesSuffix = ".img"
)
