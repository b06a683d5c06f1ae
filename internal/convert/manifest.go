package convert

import (
	"time"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
)

// artifactFor returns the manifest and config of the artifact of a built
// chain: the build info comes from the first layer (built or cached).
func (c *Converter) artifactFor(t registry.Target, jobs []*layerJob, optsKey string) (manifest, config []byte, err error) {
	layers := make([]artifact.PackedLayer, len(jobs))
	for i, j := range jobs {
		layers[i] = j.entry.PackedLayer
	}
	return artifact.Manifest(t.Descriptor, artifact.NewConfig(optsKey, layers), layers, c.created(t))
}

// created is the artifact's creation time. A deterministic build takes it
// from the image (the Unix epoch when the image has none): same input, same
// bytes, so converting twice yields the same artifact digest.
func (c *Converter) created(t registry.Target) time.Time {
	if !c.b.Capabilities().Deterministic {
		return c.now().UTC()
	}
	if t.Config != nil && !t.Config.Created.IsZero() {
		return t.Config.Created.UTC()
	}
	return time.Unix(0, 0).UTC()
}
