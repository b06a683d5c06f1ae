package fetchtest

import (
	"context"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
)

// NewRegistry returns a registry client made with opts, or fails the test.
func NewRegistry(t testing.TB, opts ...registry.Option) *registry.Client {
	t.Helper()
	c, err := registry.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Artifacts lists the cimconv artifacts that refer to subject (a digest
// reference; plain HTTP allowed), or fails the test.
func Artifacts(t testing.TB, reg *registry.Client, subject string) []v1.Descriptor {
	t.Helper()
	d, err := name.NewDigest(subject, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	descs, err := reg.Referrers(context.Background(), d, artifact.ArtifactType)
	if err != nil {
		t.Fatal(err)
	}
	return descs
}
