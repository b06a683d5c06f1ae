package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/trust/keys"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
)

// WithSigner signs every pushed artifact with s (a Sigstore bundle pushed as
// a referrer of the artifact). An existing artifact is then reused only when
// it carries a valid signature by the same key; anything else is rebuilt and
// signed, so the worker never signs bytes it did not produce.
func WithSigner(s *sigstore.Signer) Option { return func(c *Converter) { c.signer = s } }

// initSigning prepares the self-check of existing artifacts (New calls it).
func (c *Converter) initSigning() {
	if c.signer == nil {
		return
	}
	// A Signer's key always loads as a verifier; if it did not,
	// signedBySelf reports it on first use.
	if v, err := sigstore.NewVerifier(c.reg, []*keys.PublicKey{c.signer.Public()}, sigstore.WithLogger(c.log)); err == nil {
		c.self = v
	}
}

// sign signs the pushed artifact manifest d of t.
func (c *Converter) sign(ctx context.Context, repo name.Repository, d v1.Hash, manifest, cfgBytes []byte) error {
	if c.signer == nil {
		return nil
	}
	var cfg artifact.Config
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		return fmt.Errorf("sign artifact %s: config: %w", d, err)
	}
	desc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: d, Size: int64(len(manifest))}
	sig, err := c.signer.Push(ctx, c.reg, repo, desc, sigstore.PredicateFor(&cfg))
	if err != nil {
		return fmt.Errorf("sign artifact %s: %w", d, err)
	}
	c.log.Info("artifact signed", zap.String("artifact", d.String()), zap.String("signature", sig.String()), zap.String("key", c.signer.KeyID()))
	return nil
}

// signedBySelf reports whether the existing artifact d of t verifies with
// this worker's own key (always true without a signer).
func (c *Converter) signedBySelf(ctx context.Context, t registry.Target, d v1.Descriptor) (bool, error) {
	if c.signer == nil {
		return true, nil
	}
	if c.self == nil {
		return false, fmt.Errorf("signing key %s cannot verify its own signatures", c.signer.KeyID())
	}
	raw, _, err := c.reg.FetchManifest(ctx, t.Ref.Context().Digest(d.Digest.String()))
	if err != nil {
		return false, err
	}
	if d.MediaType == "" {
		d.MediaType = types.OCIManifestSchema1
	}
	_, err = c.self.Verify(ctx, trust.Request{Subject: t.Ref, Artifact: d, Manifest: raw})
	if err != nil && !trustVerdict(err) {
		return false, err
	}
	return err == nil, nil
}

func trustVerdict(err error) bool { return errors.Is(err, trust.ErrUntrusted) }
