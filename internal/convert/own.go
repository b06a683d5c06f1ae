package convert

import (
	"context"
	"encoding/json"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/errdefs"
)

// ErrNotAnImage is returned for a reference that is one of cimconv's own
// artifacts or a referrers index (an index listing only artifacts), not an
// image to convert. Registries notify about every manifest push, including
// the artifacts cimconv pushes; converting them would loop. Callers treat it
// as "nothing to do", not as a failure.
var ErrNotAnImage = errdefs.New(errdefs.ErrInvalidArgument, "not an image: a cimconv artifact or a referrers index")

// manifestShape is the part of a manifest or index that tells images from
// artifacts.
type manifestShape struct {
	MediaType    string `json:"mediaType"`
	ArtifactType string `json:"artifactType"`
	Config       struct {
		MediaType string `json:"mediaType"`
	} `json:"config"`
	Manifests []struct {
		ArtifactType string `json:"artifactType"`
	} `json:"manifests"`
}

// notAnImage reports whether a digest reference names an artifact or a
// referrers index. Tag references are left to Resolve (cimconv pushes its
// artifacts by digest; the referrers fallback tag is refused there as an
// index without Windows images).
func (c *Converter) notAnImage(ctx context.Context, ref string) (bool, error) {
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return false, nil // a tag, or malformed: Resolve says what is wrong
	}
	raw, _, err := c.reg.FetchManifest(ctx, d)
	if err != nil {
		return false, err
	}
	return isArtifactManifest(raw), nil
}

func isArtifactManifest(raw []byte) bool {
	var m manifestShape
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	if m.ArtifactType == artifact.ArtifactType || m.Config.MediaType == artifact.ArtifactType {
		return true
	}
	if len(m.Manifests) == 0 {
		return false
	}
	for _, e := range m.Manifests {
		if e.ArtifactType == "" {
			return false
		}
	}
	return true // every entry is an artifact: a referrers (fallback) index
}
