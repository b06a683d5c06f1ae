package convert

import (
	"bytes"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cimconv/cimconv/internal/artifact"
)

// writeLayout writes the artifact as an OCI image layout in dir (created or
// appended to) and returns the manifest digest.
func writeLayout(dir string, jobs []*layerJob, cfgBytes, manifest []byte) (string, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return "", err
		}
	}
	for _, j := range jobs {
		h, err := v1.NewHash(j.entry.Blob.Digest)
		if err != nil {
			return "", err
		}
		if err := p.WriteBlob(h, io.NopCloser(j.blob.Reader())); err != nil {
			return "", err
		}
	}
	ch, _, err := v1.SHA256(bytes.NewReader(cfgBytes))
	if err != nil {
		return "", err
	}
	if err := p.WriteBlob(ch, io.NopCloser(bytes.NewReader(cfgBytes))); err != nil {
		return "", err
	}
	mh, ms, err := v1.SHA256(bytes.NewReader(manifest))
	if err != nil {
		return "", err
	}
	if err := p.WriteBlob(mh, io.NopCloser(bytes.NewReader(manifest))); err != nil {
		return "", err
	}
	desc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: mh, Size: ms, ArtifactType: artifact.ArtifactType}
	if err := p.AppendDescriptor(desc); err != nil {
		return "", err
	}
	return mh.String(), nil
}
