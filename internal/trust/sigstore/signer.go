package sigstore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust/keys"
)

// Signer signs artifacts with one private key and pushes each signature as
// a referrer of the artifact.
type Signer struct {
	key *keys.PrivateKey
	kp  *keypair
	now func() time.Time
}

// SignerOption configures a Signer.
type SignerOption func(*Signer)

// WithClock sets the clock for the referrer's created annotation (tests).
func WithClock(now func() time.Time) SignerOption { return func(s *Signer) { s.now = now } }

// NewSigner returns a Signer for key.
func NewSigner(key *keys.PrivateKey, opts ...SignerOption) (*Signer, error) {
	det, err := signature.GetAlgorithmDetails(key.Public.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", key.Public.Source, err)
	}
	s := &Signer{key: key, kp: &keypair{key: key, det: det}, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Public is the signing key's public half.
func (s *Signer) Public() *keys.PublicKey { return s.key.Public }

// KeyID is the signing key's id ("sha256:<hex>").
func (s *Signer) KeyID() string { return s.key.Public.ID }

// Bundle returns the Sigstore bundle (protobuf JSON) signing artifact, the
// digest of an artifact manifest, with p as the statement's predicate.
func (s *Signer) Bundle(ctx context.Context, artifact v1.Hash, p Predicate) ([]byte, error) {
	if artifact.Algorithm != "sha256" || len(artifact.Hex) != 64 {
		return nil, fmt.Errorf("sign: artifact digest %q is not sha256", artifact)
	}
	pred, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	st, err := json.Marshal(statement{
		Type:          "https://in-toto.io/Statement/v1",
		Subject:       []stmtSubject{{Digest: map[string]string{"sha256": artifact.Hex}}},
		PredicateType: PredicateType,
		Predicate:     pred,
	})
	if err != nil {
		return nil, err
	}
	b, err := sign.Bundle(&sign.DSSEData{Data: st, PayloadType: PayloadType}, s.kp, sign.BundleOptions{Context: ctx})
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", artifact, err)
	}
	return protojson.Marshal(b)
}

// Push signs the artifact manifest desc in repo and pushes the bundle as an
// OCI 1.1 referrer of it (or a fallback-tag entry where the registry has no
// referrers API). It returns the signature manifest's digest.
func (s *Signer) Push(ctx context.Context, reg *registry.Client, repo name.Repository, desc v1.Descriptor, p Predicate) (v1.Hash, error) {
	bundle, err := s.Bundle(ctx, desc.Digest, p)
	if err != nil {
		return v1.Hash{}, err
	}
	cfg := blobDesc(EmptyConfigMediaType, emptyConfig)
	layer := blobDesc(BundleMediaType, bundle)
	for _, b := range []struct {
		d    v1.Descriptor
		data []byte
	}{{cfg, emptyConfig}, {layer, bundle}} {
		data := b.data
		if err := reg.PushBlob(ctx, repo, b.d, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }); err != nil {
			return v1.Hash{}, fmt.Errorf("push signature of %s: %w", desc.Digest, err)
		}
	}
	subject := v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        cfg,
		Layers:        []v1.Descriptor{layer},
		Subject:       &subject,
		Annotations: map[string]string{
			AnnotationBundleContent:            "dsse-envelope",
			AnnotationPredicateType:            PredicateType,
			AnnotationKeyID:                    s.key.Public.ID,
			"org.opencontainers.image.created": s.now().UTC().Format(time.RFC3339),
		},
	}
	raw, err := json.Marshal(referrerManifest{Manifest: m, ArtifactType: BundleMediaType})
	if err != nil {
		return v1.Hash{}, err
	}
	h, err := reg.PushArtifact(ctx, repo, raw, types.OCIManifestSchema1, subject)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push signature of %s: %w", desc.Digest, err)
	}
	return h, nil
}

// referrerManifest adds the OCI 1.1 artifactType to ggcr's manifest.
type referrerManifest struct {
	v1.Manifest
	ArtifactType string `json:"artifactType,omitempty"`
}

func blobDesc(mt string, b []byte) v1.Descriptor {
	h, n, _ := v1.SHA256(bytes.NewReader(b))
	return v1.Descriptor{MediaType: types.MediaType(mt), Digest: h, Size: n}
}

// keypair adapts a loaded key to sigstore-go's sign.Keypair.
type keypair struct {
	key *keys.PrivateKey
	det signature.AlgorithmDetails
}

func (k *keypair) GetHashAlgorithm() protocommon.HashAlgorithm { return k.det.GetProtoHashType() }
func (k *keypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return k.det.GetSignatureAlgorithm()
}
func (k *keypair) GetHint() []byte                { return []byte(k.key.Public.Hint) }
func (k *keypair) GetPublicKey() crypto.PublicKey { return k.key.Public.Key }
func (k *keypair) GetPublicKeyPem() (string, error) {
	return string(k.key.Public.PEM), nil
}

func (k *keypair) GetKeyAlgorithm() string {
	switch k.det.GetKeyType() {
	case signature.ECDSA:
		return "ECDSA"
	case signature.ED25519:
		return "ED25519"
	case signature.RSA:
		return "RSA"
	}
	return ""
}

// SignData signs data (the DSSE pre-authentication encoding): a digest of it
// for ECDSA, the data itself for Ed25519.
func (k *keypair) SignData(_ context.Context, data []byte) ([]byte, []byte, error) {
	hf := k.det.GetHashType()
	toSign := data
	if hf != crypto.Hash(0) {
		h := hf.New()
		h.Write(data)
		toSign = h.Sum(nil)
	}
	sig, err := k.key.Signer.Sign(rand.Reader, toSign, hf)
	if err != nil {
		return nil, nil, fmt.Errorf("sign with %s: %w", k.key.Public.ID, err)
	}
	return sig, toSign, nil
}
