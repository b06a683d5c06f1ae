package convert

import (
	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
)

// The one conversion between what a builder returns (builder.BuiltLayer)
// and what the chain cache and the artifact keep (artifact.PackedLayer).

// packedLayer records a built layer of source src whose blob is blob.
func packedLayer(src builder.LayerSource, b *builder.BuiltLayer, blob artifact.BlobInfo) artifact.PackedLayer {
	return artifact.PackedLayer{
		Blob: blob,
		Layer: artifact.LayerConfig{
			SourceDigest: src.Digest, DiffID: src.DiffID, ChainID: src.ChainID,
			Cim: b.CimName, CimFiles: b.CimFiles, SideFiles: b.SideFiles, Integrity: b.IntegrityDigest,
		},
		Build: artifact.BuildInfo{
			Builder: b.Builder, Format: b.Format, CimVersion: b.CimVersion,
			WindowsBuild: b.WindowsBuild, Experimental: b.Experimental,
		},
	}
}

// builtLayer is the inverse of packedLayer: the BuiltLayer of source src
// whose packed layer p is unpacked into chainDir (its side files into
// sideDir) on top of parent.
func builtLayer(src builder.LayerSource, p artifact.PackedLayer, chainDir, sideDir string, parent *builder.BuiltLayer) *builder.BuiltLayer {
	l, b := p.Layer, p.Build
	return &builder.BuiltLayer{
		ChainID: src.ChainID, DiffID: src.DiffID, SourceDigest: src.Digest,
		CimDir: chainDir, CimName: l.Cim, CimFiles: l.CimFiles,
		SideDir: sideDir, SideFiles: l.SideFiles,
		Format: b.Format, CimVersion: b.CimVersion, Builder: b.Builder, WindowsBuild: b.WindowsBuild,
		Experimental: b.Experimental, IntegrityDigest: l.Integrity, Parent: parent,
	}
}
