package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"path/filepath"
	"strings"
)

// CIM formats a builder can write.
const (
	FormatForked = "forked" // classic region-file CIM forked from its parent's CIM
	FormatBlock  = "block"  // block CIM (Windows only, newer builds)
)

// LayerSource describes one layer of an image and how to read it.
type LayerSource struct {
	// Digest is the layer digest as listed in the image manifest ("sha256:...").
	Digest string
	// DiffID is the digest of the uncompressed tar, from the image config.
	DiffID string
	// ChainID is the OCI chainID of this layer and every layer below it.
	ChainID string
	// MediaType is the layer's media type as listed in the manifest.
	MediaType string
	// Size is the compressed size from the manifest, or -1 when unknown.
	Size int64
	// Open returns the layer bytes as stored (compressed or not). Builders
	// detect the compression from the bytes, not from MediaType.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// BuiltLayer is the result of building one layer's CIM.
type BuiltLayer struct {
	// ChainID and DiffID of the layer this CIM was built from.
	ChainID string
	DiffID  string
	// SourceDigest is LayerSource.Digest.
	SourceDigest string

	// CimDir is the directory holding the CIM files of the whole chain
	// (a forked CIM must sit beside its parents' region files).
	CimDir string
	// CimName is the file name of this layer's .cim inside CimDir.
	CimName string
	// CimFiles lists this layer's own files inside CimDir (its .cim,
	// region_* and objectid_* files), sorted.
	CimFiles []string

	// SideDir holds the files kept beside the CIM for children
	// (Hives/*_BASE, layout); empty when the layer has none.
	SideDir string
	// SideFiles lists paths relative to SideDir, slash-separated, sorted.
	SideFiles []string

	Format       string // FormatForked or FormatBlock
	CimVersion   string // e.g. "3.0"
	Builder      string // builder name, e.g. "portable"
	WindowsBuild string // OS build the CIM targets ("" when not tied to a host)
	// IntegrityDigest is the verified block CIM digest, when there is one.
	IntegrityDigest string
	// Experimental is true when the builder is not validated against CimFS.dll.
	Experimental bool
	// UnmergedDeltas is true when delta hives were kept without merging
	// (inspection and tests only; such a chain must never be published).
	UnmergedDeltas bool
	// HiveMerge names the merge that produced this layer's merged hives
	// (HiveMergePortable), empty when it merged none or offreg did.
	HiveMerge string

	// Parent is the layer this one was forked from (nil for a base layer).
	Parent *BuiltLayer
}

// HiveMergePortable names internal/hive's pure-Go merge of delta hives in
// artifacts (annotation io.cimconv.hive.merge): not offreg's ORMergeHives,
// and never compared with it on Windows.
const HiveMergePortable = "cimconv-portable/1"

// Capabilities says what a builder can do on this host.
type Capabilities struct {
	Name string
	// Formats lists the CIM formats the builder can write on this host;
	// Format is the one it writes with its current options.
	Formats      []string
	Format       string
	WindowsBuild string // host build the output targets, "" if host-independent
	HiveMerge    bool   // can merge delta hives of non-base layers
	// HiveMergeName is what BuiltLayer.HiveMerge records for the layers
	// whose delta hives this builder merges (HiveMergePortable); "" when it
	// merges none or offreg does, which goes unrecorded.
	HiveMergeName string
	// Integrity and VHDFooter are the block CIM options it writes with
	// (verified block CIMs; a VHD footer on each block file).
	Integrity     bool
	VHDFooter     bool
	Deterministic bool // same chain -> byte-identical output
	Experimental  bool // not validated against CimFS.dll
}

// Builder writes the CIM for one layer.
type Builder interface {
	// BuildLayer writes the CIM for one layer, forked from parent (nil for a
	// base layer), into dir. dir is shared by the whole chain: parent's CimDir
	// equals dir when parent != nil. On error nothing of this layer is left in
	// dir.
	BuildLayer(ctx context.Context, layer LayerSource, parent *BuiltLayer, dir string) (*BuiltLayer, error)
	// Capabilities describes the builder on this host.
	Capabilities() Capabilities
}

// SideDir is where the files kept beside a layer's CIM (Hives/*_BASE, layout)
// live inside a chain directory: one folder per chainID, as containerd's
// cimfs snapshotter keeps one layer directory per snapshot.
func SideDir(chainDir, chainID string) string {
	return filepath.Join(chainDir, "layers", strings.TrimPrefix(chainID, "sha256:"))
}

// ChainID computes the OCI chainID of a layer from its parent's chainID ("" for
// a base layer) and its diffID: ChainID(L0) = DiffID(L0),
// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
func ChainID(parent, diffID string) string {
	if parent == "" {
		return diffID
	}
	sum := sha256.Sum256([]byte(parent + " " + diffID))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TwoPhase is implemented by builders that can do a layer's data work
// (fetch, decompress, validate, write file data) before its parent is built,
// leaving only the metadata to be done in chain order. The conversion then
// prepares every layer of a chain concurrently and finishes them in order, so
// an N-layer image takes closer to its largest layer than to the sum.
type TwoPhase interface {
	Builder
	// Prepare streams the layer and writes its data into dir, knowing only
	// its position in the chain (depth 0 = base layer). layer.ChainID must
	// be set. The result must be passed to Finish, or discarded.
	Prepare(ctx context.Context, layer LayerSource, depth int, dir string) (Prepared, error)
	// Finish completes a prepared layer on top of parent (nil for a base
	// layer; parent.CimDir must be the dir given to Prepare). On error
	// nothing of this layer is left in dir.
	Finish(ctx context.Context, p Prepared, parent *BuiltLayer) (*BuiltLayer, error)
}

// Prepared is a layer whose data is written but whose CIM is not finished.
type Prepared interface {
	// Discard removes everything Prepare wrote; it is a no-op after Finish.
	Discard() error
}
