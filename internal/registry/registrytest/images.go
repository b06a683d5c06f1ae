package registrytest

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// Layer media types chosen from the stored bytes.
var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// blobLayer is a v1.Layer over bytes as stored, with the diffID computed
// from their decompressed form.
type blobLayer struct {
	stored []byte
	mt     types.MediaType
	digest v1.Hash
	diffID v1.Hash
}

func newLayer(t testing.TB, stored []byte, mt types.MediaType) *blobLayer {
	t.Helper()
	var plain io.Reader
	switch {
	case bytes.HasPrefix(stored, gzipMagic):
		zr, err := gzip.NewReader(bytes.NewReader(stored))
		if err != nil {
			t.Fatalf("registrytest: gzip layer: %v", err)
		}
		plain = zr
		if mt == "" {
			mt = types.OCILayer
		}
	case bytes.HasPrefix(stored, zstdMagic):
		zr, err := zstd.NewReader(bytes.NewReader(stored))
		if err != nil {
			t.Fatalf("registrytest: zstd layer: %v", err)
		}
		defer zr.Close()
		plain = zr
		if mt == "" {
			mt = types.OCILayerZStd
		}
	default:
		plain = bytes.NewReader(stored)
		if mt == "" {
			mt = types.OCIUncompressedLayer
		}
	}
	diffID, _, err := v1.SHA256(plain)
	if err != nil {
		t.Fatalf("registrytest: decompressing layer: %v", err)
	}
	digest, _, _ := v1.SHA256(bytes.NewReader(stored))
	return &blobLayer{stored: stored, mt: mt, digest: digest, diffID: diffID}
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *blobLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *blobLayer) Size() (int64, error)                { return int64(len(l.stored)), nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.stored)), nil
}
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) {
	// Not needed by remote.Write (it pushes Compressed); kept honest anyway.
	return io.NopCloser(bytes.NewReader(l.stored)), nil
}

// buildImage: OCI manifest, config os/arch/os.version from p, one layer per
// entry. addenda are prepended (foreign layers).
func buildImage(t testing.TB, p v1.Platform, pre []mutate.Addendum, layers [][]byte) v1.Image {
	t.Helper()
	return buildImageAs(t, types.OCIManifestSchema1, types.OCIConfigJSON, p, pre, layers)
}

func buildImageAs(t testing.TB, mt, configMT types.MediaType, p v1.Platform, pre []mutate.Addendum, layers [][]byte) v1.Image {
	t.Helper()
	if p.Architecture == "" {
		p.Architecture = "amd64"
	}
	if p.OS == "" {
		p.OS = "windows"
	}
	img := mutate.MediaType(empty.Image, mt)
	img = mutate.ConfigMediaType(img, configMT)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant, cfg.OSVersion = p.OS, p.Architecture, p.Variant, p.OSVersion
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	adds := append([]mutate.Addendum(nil), pre...)
	for _, b := range layers {
		adds = append(adds, mutate.Addendum{Layer: newLayer(t, b, ""), MediaType: ""})
	}
	img, err = mutate.Append(img, adds...)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return img
}

func write(t testing.TB, ref string, img v1.Image, p v1.Platform) v1.Descriptor {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if err := remote.Write(r, img, remote.WithTransport(http.DefaultTransport)); err != nil {
		t.Fatalf("registrytest: pushing %s: %v", ref, err)
	}
	d, err := partial.Descriptor(img)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if p.Architecture == "" {
		p.Architecture = "amd64"
	}
	if p.OS == "" {
		p.OS = "windows"
	}
	d.Platform = &p
	return *d
}

// PushImage builds an image from layers (as stored: gzip, zstd or plain tar
// bytes, detected by magic number), with a config saying p's os (default
// windows), architecture (default amd64) and os.version, and the diff_ids
// of the decompressed layers. It pushes it to ref and returns its
// descriptor with Platform set.
func PushImage(t testing.TB, ref string, layers [][]byte, p v1.Platform) v1.Descriptor {
	t.Helper()
	return write(t, ref, buildImage(t, p, nil, layers), p)
}

// PushIndex pushes an index to ref holding manifests (already pushed to the
// same repository, with Platform set) plus a freshly pushed linux/amd64
// image and a BuildKit-style attestation manifest (platform unknown/unknown)
// referring to the first manifest.
func PushIndex(t testing.TB, ref string, manifests ...v1.Descriptor) v1.Descriptor {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	repo := r.Context()
	var adds []mutate.IndexAddendum
	for _, d := range manifests {
		img, err := remote.Image(repo.Digest(d.Digest.String()), remote.WithTransport(http.DefaultTransport))
		if err != nil {
			t.Fatalf("registrytest: reading %s: %v", d.Digest, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: d})
	}
	linux := buildImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}, nil, [][]byte{tarOf(t, "etc/os-release", "ID=test\n")})
	adds = append(adds, mutate.IndexAddendum{Add: linux, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	att := buildImage(t, v1.Platform{OS: "unknown", Architecture: "unknown"}, nil, [][]byte{[]byte(`{"_type":"https://in-toto.io/Statement/v0.1"}`)})
	ann := map[string]string{"vnd.docker.reference.type": "attestation-manifest"}
	if len(manifests) > 0 {
		ann["vnd.docker.reference.digest"] = manifests[0].Digest.String()
	}
	adds = append(adds, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
		Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}, Annotations: ann,
	}})
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	if err := remote.WriteIndex(r, idx, remote.WithTransport(http.DefaultTransport)); err != nil {
		t.Fatalf("registrytest: pushing index %s: %v", ref, err)
	}
	d, err := partial.Descriptor(idx)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return *d
}

// PushForeignLayerImage pushes an image whose first layer is a Docker
// foreign (non-distributable) layer: foreign is its stored (gzip) bytes,
// not uploaded to the registry, listed with urls; layers follow as in
// PushImage. Serve foreign at one of urls yourself (see ServeBlob).
func PushForeignLayerImage(t testing.TB, ref string, foreign []byte, urls []string, layers [][]byte, p v1.Platform) v1.Descriptor {
	t.Helper()
	fl := newLayer(t, foreign, types.DockerForeignLayer)
	pre := []mutate.Addendum{{Layer: fl, URLs: urls, MediaType: types.DockerForeignLayer}}
	// Windows base images use Docker schema 2 manifests for foreign layers;
	// distribution accepts urls only there (and on OCI non-distributable types).
	return write(t, ref, buildImageAs(t, types.DockerManifestSchema2, types.DockerConfigJSON, p, pre, layers), p)
}

// ServeBlob serves b at http://127.0.0.1:port/<path> until the test ends
// and returns the full URL.
func ServeBlob(t testing.TB, path string, b []byte) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/"+path, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(b) })
	host := serve(t, &options{}, mux)
	return "http://" + host + "/" + path
}
