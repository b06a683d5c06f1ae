package artifact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cimconv/cimconv/internal/version"
)

// PackedLayer is one layer ready for an artifact: its packed blob, its entry
// in the config and the build that wrote it. The chain cache stores it as it
// is, so a cached layer goes into an artifact without any field copied.
type PackedLayer struct {
	Blob  BlobInfo    `json:"blob"`
	Layer LayerConfig `json:"layer"`
	Build BuildInfo   `json:"build"`
}

// NewConfig returns the config of an artifact made of layers (base first)
// converted with options: the base layer's build, experimental when any
// layer is.
func NewConfig(options string, layers []PackedLayer) *Config {
	cfg := &Config{FormatVersion: version.FormatVersion, Converter: version.Version, Options: options}
	for i, l := range layers {
		if i == 0 {
			cfg.BuildInfo = l.Build
		}
		cfg.Experimental = cfg.Experimental || l.Build.Experimental
		cfg.Layers = append(cfg.Layers, l.Layer)
	}
	return cfg
}

// Manifest returns the artifact's manifest (subject = the image manifest)
// and config bytes; cfg.Layers and layers must describe the same chain.
// created is the org.opencontainers.image.created annotation.
func Manifest(subject v1.Descriptor, cfg *Config, layers []PackedLayer, created time.Time) (manifest, config []byte, err error) {
	if len(cfg.Layers) != len(layers) {
		return nil, nil, fmt.Errorf("artifact manifest: config lists %d layers, %d blobs given", len(cfg.Layers), len(layers))
	}
	config, err = MarshalConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	cfgHash, cfgSize, err := v1.SHA256(bytes.NewReader(config))
	if err != nil {
		return nil, nil, err
	}
	ann := cfg.BuildInfo.annotations()
	ann[AnnotationCreated] = created.Format(time.RFC3339)
	ann[AnnotationFormatVersion] = cfg.FormatVersion
	ann[AnnotationConverter] = cfg.Converter
	ann[AnnotationOptions] = cfg.Options
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config:        v1.Descriptor{MediaType: types.MediaType(ArtifactType), Digest: cfgHash, Size: cfgSize},
		Subject:       &v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations:   ann,
	}
	for i, l := range layers {
		desc, err := l.Descriptor()
		if err != nil {
			return nil, nil, fmt.Errorf("artifact manifest: layer %d: %w", i+1, err)
		}
		desc.Annotations = l.Build.annotations()
		desc.Annotations[AnnotationSourceDigest] = l.Layer.SourceDigest
		desc.Annotations[AnnotationSourceDiffID] = l.Layer.DiffID
		desc.Annotations[AnnotationChainID] = l.Layer.ChainID
		if l.Layer.Integrity != "" {
			desc.Annotations[AnnotationIntegrity] = l.Layer.Integrity
		}
		m.Layers = append(m.Layers, desc)
	}
	manifest, err = json.Marshal(m)
	return manifest, config, err
}

// Descriptor is the layer blob's descriptor (no annotations).
func (l PackedLayer) Descriptor() (v1.Descriptor, error) {
	h, err := v1.NewHash(l.Blob.Digest)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("layer blob digest: %w", err)
	}
	return v1.Descriptor{MediaType: types.MediaType(LayerMediaType), Digest: h, Size: l.Blob.Size}, nil
}

// ConfigDescriptor is the descriptor of config bytes made by Manifest.
func ConfigDescriptor(config []byte) v1.Descriptor {
	h, n, _ := v1.SHA256(bytes.NewReader(config)) // reading bytes cannot fail
	return v1.Descriptor{MediaType: types.MediaType(ArtifactType), Digest: h, Size: n}
}

// annotations are the build's manifest annotations (builder, format, CIM
// version; Windows build and experimental when set).
func (b BuildInfo) annotations() map[string]string {
	ann := map[string]string{
		AnnotationBuilder:    b.Builder,
		AnnotationCimFormat:  b.Format,
		AnnotationCimVersion: b.CimVersion,
	}
	if b.WindowsBuild != "" {
		ann[AnnotationWindowsBuild] = b.WindowsBuild
	}
	if b.Experimental {
		ann[AnnotationExperimental] = "true"
	}
	return ann
}
