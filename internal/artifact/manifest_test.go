package artifact

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func packedLayers() []PackedLayer {
	var out []PackedLayer
	for i := 0; i < 3; i++ {
		l := PackedLayer{
			Blob: BlobInfo{Digest: fmt.Sprintf("sha256:%064x", 100+i), Size: int64(1000 + i)},
			Layer: LayerConfig{
				SourceDigest: fmt.Sprintf("sha256:%064x", 200+i), DiffID: fmt.Sprintf("sha256:%064x", 300+i),
				ChainID: fmt.Sprintf("sha256:%064x", 400+i), Cim: fmt.Sprintf("c%d.cim", i),
				CimFiles: []string{fmt.Sprintf("c%d.cim", i), "region_x"}, SideFiles: []string{"layout"},
			},
			Build: BuildInfo{Builder: "hcsshim", Format: "block", CimVersion: "3.0", WindowsBuild: "10.0.26100.1", Experimental: i == 2},
		}
		if i == 1 {
			l.Layer.Integrity = "abc"
		}
		out = append(out, l)
	}
	return out
}

// TestManifestBytes pins the artifact format: the digests were those of the
// manifest and config the converter wrote for this input before the
// manifest moved into this package. A change here is a format change (bump
// version.FormatVersion).
func TestManifestBytes(t *testing.T) {
	layers := packedLayers()
	subject := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", 7)}, Size: 1234}
	cfg := NewConfig("builder=hcsshim,format=block", layers)
	cfg.FormatVersion, cfg.Converter = "1", "v0.1.0-dev" // as when the digests were taken
	m, c, err := Manifest(subject, cfg, layers, time.Unix(1700000000, 0).UTC())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprintf("%x", sha256.Sum256(c)), "0ebea2d823cdc1540d0d966f99b5013691bd691fdae7942a999f629bf97dfe13"; got != want {
		t.Errorf("config digest %s, want %s:\n%s", got, want, c)
	}
	if got, want := fmt.Sprintf("%x", sha256.Sum256(m)), "31a438b7d579288b25298b787067429234a5ed267cc42e4e4a83e9f7553b590b"; got != want {
		t.Errorf("manifest digest %s, want %s:\n%s", got, want, m)
	}
	if d := ConfigDescriptor(c); d.Size != int64(len(c)) || d.Digest.Hex != fmt.Sprintf("%x", sha256.Sum256(c)) {
		t.Errorf("ConfigDescriptor = %+v", d)
	}
}

func TestManifestContents(t *testing.T) {
	layers := packedLayers()
	layers[2].Build.Experimental = false
	layers[0].Build.WindowsBuild = ""
	cfg := NewConfig("opts", layers)
	if cfg.Experimental || cfg.Builder != "hcsshim" || len(cfg.Layers) != 3 || cfg.Layers[1].Integrity != "abc" {
		t.Fatalf("config %+v", cfg)
	}
	layers[1].Build.Experimental = true
	if !NewConfig("opts", layers).Experimental {
		t.Error("one experimental layer must make the artifact experimental")
	}
	m, _, err := Manifest(v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}}, NewConfig("opts", layers), layers, time.Unix(0, 0).UTC())
	if err != nil {
		t.Fatal(err)
	}
	var got v1.Manifest
	if err := json.Unmarshal(m, &got); err != nil {
		t.Fatal(err)
	}
	if got.Subject == nil || got.Subject.Digest.Hex != strings.Repeat("1", 64) || got.ArtifactType != ArtifactType {
		t.Errorf("subject/artifactType: %+v %s", got.Subject, got.ArtifactType)
	}
	if _, ok := got.Annotations[AnnotationWindowsBuild]; ok {
		t.Error("a host-independent base layer must give no Windows build annotation")
	}
	if got.Annotations[AnnotationExperimental] != "true" || got.Annotations[AnnotationCreated] != "1970-01-01T00:00:00Z" {
		t.Errorf("annotations %v", got.Annotations)
	}
	for i, d := range got.Layers {
		if d.Digest.String() != layers[i].Blob.Digest || d.Annotations[AnnotationChainID] != layers[i].Layer.ChainID {
			t.Errorf("layer %d: %+v", i, d)
		}
		if _, ok := d.Annotations[AnnotationIntegrity]; ok != (i == 1) {
			t.Errorf("layer %d: integrity annotation present=%v", i, ok)
		}
	}

	bad := append([]PackedLayer(nil), layers...)
	bad[1].Blob.Digest = "md5:x"
	if _, _, err := Manifest(v1.Descriptor{}, NewConfig("opts", bad), bad, time.Time{}); err == nil || !strings.Contains(err.Error(), "layer 2") {
		t.Errorf("bad digest: err = %v, want it to name layer 2", err)
	}
	if _, _, err := Manifest(v1.Descriptor{}, NewConfig("opts", layers[:2]), layers, time.Time{}); err == nil {
		t.Error("config and blobs of different chains accepted")
	}
}
