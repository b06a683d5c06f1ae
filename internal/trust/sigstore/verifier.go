package sigstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/trust/keys"
)

// DefaultMaxSignatures bounds the signature referrers examined for one
// artifact besides those naming a trusted key id, which come first.
const DefaultMaxSignatures = 32

// DefaultMaxClaimedSignatures bounds the signature referrers naming a
// trusted key id examined for one artifact. Key ids are public, so junk can
// claim one: each costs two requests, and past this bound the verification
// gives up rather than let junk cost without limit.
const DefaultMaxClaimedSignatures = 1024

// Verifier implements trust.Verifier with a set of trusted public keys.
type Verifier struct {
	reg           *registry.Client
	keys          []*trustedKey
	maxSignatures int
	maxClaimed    int
	log           *zap.Logger
}

type trustedKey struct {
	pub *keys.PublicKey
	sv  *verify.Verifier
}

// VerifierOption configures a Verifier.
type VerifierOption func(*Verifier)

// WithMaxSignatures sets how many signature referrers of one artifact are
// examined at most (default DefaultMaxSignatures).
func WithMaxSignatures(n int) VerifierOption { return func(v *Verifier) { v.maxSignatures = n } }

// WithMaxClaimedSignatures sets how many signature referrers naming a
// trusted key id are examined at most (default DefaultMaxClaimedSignatures).
func WithMaxClaimedSignatures(n int) VerifierOption { return func(v *Verifier) { v.maxClaimed = n } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) VerifierOption { return func(v *Verifier) { v.log = l } }

var _ trust.Verifier = (*Verifier)(nil)

// NewVerifier returns a Verifier trusting every key of trusted (several at
// once during a rotation). It reads signatures and the images' manifests
// through reg.
func NewVerifier(reg *registry.Client, trusted []*keys.PublicKey, opts ...VerifierOption) (*Verifier, error) {
	if len(trusted) == 0 {
		return nil, errors.New("trust: no trusted keys (give --trusted-key, or --trust-unsigned for development)")
	}
	v := &Verifier{reg: reg, maxSignatures: DefaultMaxSignatures, maxClaimed: DefaultMaxClaimedSignatures, log: zap.NewNop()}
	for _, o := range opts {
		o(v)
	}
	for _, k := range trusted {
		sv, err := signature.LoadDefaultVerifier(k.Key)
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: %w", k.Source, err)
		}
		ek := root.NewExpiringKey(sv, time.Time{}, time.Time{})
		material := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return ek, nil })
		// Key based: no transparency log, no timestamps (nothing to reach).
		ver, err := verify.NewVerifier(material, verify.WithNoObserverTimestamps())
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: %w", k.Source, err)
		}
		v.keys = append(v.keys, &trustedKey{pub: k, sv: ver})
	}
	return v, nil
}

// KeyIDs lists the trusted key ids.
func (v *Verifier) KeyIDs() []string {
	var out []string
	for _, k := range v.keys {
		out = append(out, k.pub.ID)
	}
	return out
}

// CheckRecorded accepts a verdict recorded earlier (a layer cached by
// `converter fetch --root`) only when it says the artifact was signed by a
// key this Verifier trusts now: one recorded under --trust-unsigned (not
// signed as far as it knows) or signed by a key since removed is refused.
// The binding checks the verdict also covers were made by the code that
// recorded it and do not depend on the keys.
func (v *Verifier) CheckRecorded(res *trust.Result) error {
	switch {
	case res == nil:
		return fmt.Errorf("%w: no verdict recorded", trust.ErrUntrusted)
	case !res.Signed:
		return fmt.Errorf("%w: recorded without a signature check (--trust-unsigned); trusted keys are %s", trust.ErrUnsigned, strings.Join(v.KeyIDs(), ", "))
	case !slices.Contains(v.KeyIDs(), res.KeyID):
		return fmt.Errorf("%w: recorded as signed by key %s; trusted keys are %s", trust.ErrUnknownKey, res.KeyID, strings.Join(v.KeyIDs(), ", "))
	}
	return nil
}

var _ trust.RecordChecker = (*Verifier)(nil)

// Verify checks, in order: the artifact manifest's bytes against its digest,
// that it is a cimconv artifact whose subject is req.Subject, that a Sigstore
// bundle referring to it is signed by a trusted key and names this artifact
// digest and subject, and that the artifact config binds it to req.Subject:
// subject digest, and per layer the source digest, diffID and chainID of the
// image (read from the registry by digest). The Result lists every check; on
// an error it lists the checks made up to the failure.
func (v *Verifier) Verify(ctx context.Context, req trust.Request) (*trust.Result, error) {
	res := &trust.Result{}
	pass := func(format string, a ...any) { res.Checks = append(res.Checks, "ok: "+fmt.Sprintf(format, a...)) }
	fail := func(reason error, format string, a ...any) (*trust.Result, error) {
		msg := fmt.Sprintf(format, a...)
		res.Checks = append(res.Checks, "FAIL: "+msg)
		return res, fmt.Errorf("%w: artifact %s for %s: %s", reason, req.Artifact.Digest, req.Subject, msg)
	}
	ad := req.Artifact.Digest
	if ad.Algorithm != "sha256" || len(ad.Hex) != 64 {
		return fail(trust.ErrUntrusted, "artifact digest %q is not sha256", ad)
	}
	if got := sha256.Sum256(req.Manifest); hex.EncodeToString(got[:]) != ad.Hex {
		return fail(trust.ErrUntrusted, "manifest bytes hash to sha256:%x, not the artifact digest", got)
	}
	pass("artifact manifest hashes to %s", ad)
	var am v1.Manifest
	var at struct {
		ArtifactType string `json:"artifactType"`
	}
	if err := json.Unmarshal(req.Manifest, &am); err != nil {
		return fail(trust.ErrUntrusted, "manifest: %v", err)
	}
	_ = json.Unmarshal(req.Manifest, &at)
	if at.ArtifactType != artifact.ArtifactType {
		return fail(trust.ErrUntrusted, "artifactType %q is not %s", at.ArtifactType, artifact.ArtifactType)
	}
	subject := req.Subject.DigestStr()
	if am.Subject == nil || am.Subject.Digest.String() != subject {
		return fail(trust.ErrUnbound, "artifact manifest subject is not %s", subject)
	}
	pass("artifact manifest subject is %s", subject)

	repo := req.Subject.Context()
	keyID, sigDigest, pred, err := v.signature(ctx, repo, ad)
	if err != nil {
		if errors.Is(err, trust.ErrUntrusted) {
			res.Checks = append(res.Checks, "FAIL: signature: "+err.Error())
		}
		return res, fmt.Errorf("artifact %s for %s: %w", ad, req.Subject, err)
	}
	res.Signed, res.KeyID, res.Signature = true, keyID, sigDigest
	pass("signature %s: Sigstore bundle signed by trusted key %s over artifact %s", sigDigest, keyID, ad)
	if pred.Subject != subject {
		return fail(trust.ErrUnbound, "signed predicate names subject %s, not %s", pred.Subject, subject)
	}
	pass("signed predicate names subject %s", subject)

	cfg, err := v.artifactConfig(ctx, repo, am.Config)
	if err != nil {
		return fail(trust.ErrUntrusted, "artifact config: %v", err)
	}
	if cfg.Subject != subject {
		return fail(trust.ErrUnbound, "artifact config records subject %q, not %s", cfg.Subject, subject)
	}
	pass("artifact config records subject %s", subject)
	if cfg.Builder == "" || cfg.Format == "" {
		return fail(trust.ErrUnbound, "artifact config records no builder or CIM format")
	}
	pass("artifact config records builder %q, CIM format %q, CIM version %q", cfg.Builder, cfg.Format, cfg.CimVersion)

	layers, diffIDs, err := v.image(ctx, req.Subject)
	if err != nil {
		var uerr untrustedImage
		if errors.As(err, &uerr) {
			return fail(trust.ErrUnbound, "%v", err)
		}
		return res, fmt.Errorf("artifact %s: image %s: %w", ad, req.Subject, err)
	}
	if len(cfg.Layers) != len(layers) || len(am.Layers) != len(layers) {
		return fail(trust.ErrUnbound, "artifact has %d blobs and %d config layers, image %s has %d layers", len(am.Layers), len(cfg.Layers), subject, len(layers))
	}
	parent := ""
	for i, l := range cfg.Layers {
		parent = builder.ChainID(parent, diffIDs[i])
		switch {
		case l.SourceDigest != layers[i]:
			return fail(trust.ErrUnbound, "layer %d: artifact built from %s, image has %s", i, l.SourceDigest, layers[i])
		case l.DiffID != diffIDs[i]:
			return fail(trust.ErrUnbound, "layer %d: artifact diffID %s, image has %s", i, l.DiffID, diffIDs[i])
		case l.ChainID != parent:
			return fail(trust.ErrUnbound, "layer %d: artifact chainID %s, image has %s", i, l.ChainID, parent)
		case string(am.Layers[i].MediaType) != artifact.LayerMediaType:
			return fail(trust.ErrUnbound, "layer %d: blob media type %s", i, am.Layers[i].MediaType)
		}
		pass("layer %d: source digest %s, diffID %s, chainID %s match the image", i, layers[i], diffIDs[i], parent)
	}
	if pred.ChainID != "" && pred.ChainID != parent {
		return fail(trust.ErrUnbound, "signed predicate names top chainID %s, image has %s", pred.ChainID, parent)
	}
	v.log.Debug("artifact verified", zap.String("artifact", ad.String()), zap.String("subject", req.Subject.String()), zap.String("key", keyID))
	return res, nil
}
