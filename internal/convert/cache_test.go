package convert

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cimconv/cimconv/internal/artifact"
)

func TestCacheKeyedByChainAndParent(t *testing.T) {
	c, err := NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(t.TempDir(), "b")
	if err := os.WriteFile(blob, []byte("blobbytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := CacheEntry{ChainID: "sha256:child", ParentBlob: "sha256:parentA", PackedLayer: artifact.PackedLayer{Blob: artifact.BlobInfo{Digest: "sha256:b", Size: 9}}}
	if err := c.Put(e, blob); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, chain, parent string
		hit                 bool
	}{
		{"same chain, same parent build", "sha256:child", "sha256:parentA", true},
		{"same chain, other parent build", "sha256:child", "sha256:parentB", false},
		{"other chain", "sha256:other", "sha256:parentA", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ok, err := c.Get(tt.chain, tt.parent)
			if err != nil || ok != tt.hit {
				t.Fatalf("Get = %v, %v; want hit=%v", ok, err, tt.hit)
			}
		})
	}
	// A truncated blob is not trusted.
	if err := os.WriteFile(c.BlobPath("sha256:child"), []byte("blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Get("sha256:child", "sha256:parentA"); ok {
		t.Fatal("entry with a truncated blob was a hit")
	}
}

func TestIsArtifactManifest(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want bool
	}{
		{"our artifact", `{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.cimconv.cim.v1+json","config":{"mediaType":"application/vnd.cimconv.cim.v1+json"}}`, true},
		{"our config type only", `{"config":{"mediaType":"application/vnd.cimconv.cim.v1+json"}}`, true},
		{"referrers index", `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"artifactType":"application/vnd.cimconv.cim.v1+json"},{"artifactType":"application/vnd.example.sig"}]}`, true},
		{"windows image", `{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json"}}`, false},
		{"image index", `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json"},{"artifactType":"application/vnd.example.sig"}]}`, false},
		{"garbage", `not json`, false},
	}
	for _, tt := range tests {
		if got := isArtifactManifest([]byte(tt.raw)); got != tt.want {
			t.Errorf("%s: isArtifactManifest = %v, want %v", tt.name, got, tt.want)
		}
	}
}
