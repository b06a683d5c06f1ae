package trusttest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust/keys"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
)

// seq makes every synthetic artifact distinct (its converter field).
var seq atomic.Int64

// Key is a generated ECDSA P-256 key pair written to PEM files.
type Key struct {
	Private *keys.PrivateKey
	// PrivPath and PubPath are the PKCS#8 and PKIX PEM files.
	PrivPath, PubPath string
}

// NewKey generates a key pair and writes it to dir as <label>.key/.pub.
func NewKey(t testing.TB, dir, label string) *Key {
	t.Helper()
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := keys.MarshalPrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	k := &Key{PrivPath: filepath.Join(dir, label+".key"), PubPath: filepath.Join(dir, label+".pub")}
	if err := os.WriteFile(k.PrivPath, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if k.Private, err = keys.ParsePrivateKey(privPEM, k.PrivPath); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.PubPath, k.Private.Public.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// Public returns the key's public half.
func (k *Key) Public() *keys.PublicKey { return k.Private.Public }

// Artifact is a pushed synthetic artifact.
type Artifact struct {
	Desc     v1.Descriptor
	Manifest []byte
	Config   artifact.Config
}

// ImageLayers reads subject's layer digests and diffIDs from the registry.
func ImageLayers(t testing.TB, reg *registry.Client, subject name.Digest) (digests, diffIDs []string) {
	t.Helper()
	ctx := context.Background()
	raw, _, err := reg.FetchManifest(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	rc, err := reg.FetchBlob(ctx, subject.Context(), m.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var ic v1.ConfigFile
	if err := json.NewDecoder(rc).Decode(&ic); err != nil {
		t.Fatal(err)
	}
	for i, l := range m.Layers {
		digests = append(digests, l.Digest.String())
		diffIDs = append(diffIDs, ic.RootFS.DiffIDs[i].String())
	}
	return digests, diffIDs
}

// PushArtifact pushes a new, distinct cimconv artifact for subject whose
// config binds it correctly (subject, layer digests, diffIDs, chainIDs), after edit (may be
// nil) changed the config; blobs holds the layer blobs' bytes (nil: a
// placeholder per layer). It does not sign.
func PushArtifact(t testing.TB, reg *registry.Client, subject name.Digest, edit func(*artifact.Config), blobs [][]byte) *Artifact {
	t.Helper()
	digests, diffIDs := ImageLayers(t, reg, subject)
	cfg := artifact.Config{Subject: subject.DigestStr(), FormatVersion: "1", Converter: fmt.Sprintf("trusttest-%d", seq.Add(1)), BuildInfo: artifact.BuildInfo{Format: "forked", CimVersion: "3.0", Builder: "portable"}}
	parent := ""
	for i := range digests {
		parent = builder.ChainID(parent, diffIDs[i])
		cfg.Layers = append(cfg.Layers, artifact.LayerConfig{SourceDigest: digests[i], DiffID: diffIDs[i], ChainID: parent, Cim: fmt.Sprintf("layer%d.cim", i), CimFiles: []string{fmt.Sprintf("layer%d.cim", i)}})
	}
	if edit != nil {
		edit(&cfg)
	}
	if blobs == nil {
		for i := range cfg.Layers {
			blobs = append(blobs, []byte(fmt.Sprintf("placeholder CIM blob %d of %s", i, subject.DigestStr())))
		}
	}
	cb, err := artifact.MarshalConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	return PushManifest(t, reg, subject, cb, blobs, time.Now())
}

// PushManifest pushes config bytes and layer blobs as a cimconv artifact
// manifest referring to subject, created at created.
func PushManifest(t testing.TB, reg *registry.Client, subject name.Digest, cfgBytes []byte, blobs [][]byte, created time.Time) *Artifact {
	t.Helper()
	ctx := context.Background()
	repo := subject.Context()
	raw, sd, err := reg.FetchManifest(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw
	cd := push(t, reg, repo, artifact.ArtifactType, cfgBytes)
	m := struct {
		v1.Manifest
		ArtifactType string `json:"artifactType"`
	}{Manifest: v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        cd,
		Subject:       &v1.Descriptor{MediaType: sd.MediaType, Digest: sd.Digest, Size: sd.Size},
		Annotations: map[string]string{
			artifact.AnnotationFormatVersion: "1",
			artifact.AnnotationCreated:       created.UTC().Format(time.RFC3339),
		},
	}, ArtifactType: artifact.ArtifactType}
	for _, b := range blobs {
		m.Layers = append(m.Layers, push(t, reg, repo, artifact.LayerMediaType, b))
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	h, err := reg.PushArtifact(ctx, repo, mb, types.OCIManifestSchema1, *m.Subject)
	if err != nil {
		t.Fatal(err)
	}
	var cfg artifact.Config
	_ = json.Unmarshal(cfgBytes, &cfg)
	return &Artifact{Desc: v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: int64(len(mb)), ArtifactType: artifact.ArtifactType, Annotations: m.Annotations}, Manifest: mb, Config: cfg}
}

func push(t testing.TB, reg *registry.Client, repo name.Repository, mt string, b []byte) v1.Descriptor {
	t.Helper()
	h, n, _ := v1.SHA256(bytes.NewReader(b))
	d := v1.Descriptor{MediaType: types.MediaType(mt), Digest: h, Size: n}
	if err := reg.PushBlob(context.Background(), repo, d, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }); err != nil {
		t.Fatal(err)
	}
	return d
}

// PushJunkSignature attaches to artifact `to` a look-alike Sigstore
// signature referrer, as anyone who can push (without a key) can: the OCI
// empty config and one bundle layer holding bundle, pushed only when
// pushBundle, whose descriptor edit (may be nil) changes in the manifest. It
// returns the referrer's digest and the bundle blob's true descriptor.
func PushJunkSignature(t testing.TB, reg *registry.Client, repo name.Repository, to v1.Descriptor, bundle []byte, pushBundle bool, edit func(*v1.Descriptor)) (v1.Hash, v1.Descriptor) {
	t.Helper()
	var bd v1.Descriptor
	if pushBundle {
		bd = push(t, reg, repo, sigstore.BundleMediaType, bundle)
	} else {
		h, n, _ := v1.SHA256(bytes.NewReader(bundle))
		bd = v1.Descriptor{MediaType: sigstore.BundleMediaType, Digest: h, Size: n}
	}
	layer := bd
	if edit != nil {
		edit(&layer)
	}
	subject := v1.Descriptor{MediaType: to.MediaType, Digest: to.Digest, Size: to.Size}
	raw, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  sigstore.BundleMediaType,
		Config:        push(t, reg, repo, sigstore.EmptyConfigMediaType, []byte("{}")),
		Layers:        []v1.Descriptor{layer},
		Subject:       &subject,
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := reg.PushArtifact(context.Background(), repo, raw, types.OCIManifestSchema1, subject)
	if err != nil {
		t.Fatal(err)
	}
	return h, bd
}

// PutManifest PUTs manifest bytes to host/repo with one plain request (junk
// in bulk, as an attacker with push rights would) and returns the digest.
func PutManifest(t testing.TB, host, repo string, b []byte) v1.Hash {
	t.Helper()
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	req, err := http.NewRequest(http.MethodPut, "http://"+host+"/v2/"+repo+"/manifests/"+h.String(), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", string(types.OCIManifestSchema1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT manifest: %s", resp.Status)
	}
	return h
}

// PutCopy PUTs a copy of manifest raw, changed by edit (which gets it as
// JSON objects, e.g. to add annotations), to host/repo: a planted look-alike.
// It returns the copy's descriptor.
func PutCopy(t testing.TB, host, repo string, raw []byte, edit func(m map[string]any)) v1.Descriptor {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["annotations"].(map[string]any); !ok {
		m["annotations"] = map[string]any{}
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: PutManifest(t, host, repo, b), Size: int64(len(b))}
}

// Annotate sets an annotation of a manifest given to a PutCopy edit.
func Annotate(m map[string]any, k, v string) { m["annotations"].(map[string]any)[k] = v }
