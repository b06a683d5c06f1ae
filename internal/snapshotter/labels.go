package snapshotter

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/cimconv/cimconv/internal/artifact"
)

// Labels containerd sets on an extraction snapshot (core/snapshots and
// pkg/snapshotters; the cri.* ones are added by the handler wrapper
// snapshotters.AppendInfoHandlerWrapper, which CRI installs when a
// snapshotter is configured to receive annotations).
const (
	LabelSnapshotRef     = "containerd.io/snapshot.ref"
	LabelImageRef        = "containerd.io/snapshot/cri.image-ref"
	LabelManifestDigest  = "containerd.io/snapshot/cri.manifest-digest"
	LabelLayerDigest     = "containerd.io/snapshot/cri.layer-digest"
	LabelImageLayers     = "containerd.io/snapshot/cri.image-layers"
	labelUnpackKeyPrefix = "extract"
)

// Provenance labels of a snapshot the fast path committed. A child's fast
// path requires its parent to carry the region set the child was forked
// from.
const (
	LabelRegionSet    = "io.cimconv.snapshot/region-set"
	LabelBuilder      = "io.cimconv.snapshot/builder"
	LabelWindowsBuild = "io.cimconv.snapshot/windows-build"
	LabelArtifact     = "io.cimconv.snapshot/artifact"
	LabelFormat       = "io.cimconv.snapshot/format"
)

// RegionSet returns the region-set GUID of a layer's CIM files
// (region_<guid>_<i>), or "" when it has none.
func RegionSet(lc artifact.LayerConfig) string {
	for _, f := range lc.CimFiles {
		if rest, ok := strings.CutPrefix(f, "region_"); ok {
			if i := strings.LastIndexByte(rest, '_'); i > 0 {
				return rest[:i]
			}
		}
	}
	return ""
}

// removeRegionSet deletes the region and objectid files of region set g.
func removeRegionSet(dir, g string) {
	for _, pfx := range []string{"region_", "objectid_"} {
		ms, _ := filepath.Glob(filepath.Join(dir, pfx+g+"_*"))
		for _, m := range ms {
			os.Remove(m)
		}
	}
}
