package sigstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
)

// signature finds a bundle referring to the artifact that a trusted key
// signed over the artifact digest, and returns the key id, the signature
// manifest digest and the signed predicate.
func (v *Verifier) signature(ctx context.Context, repo name.Repository, ad v1.Hash) (string, string, *Predicate, error) {
	// All referrers, filtered here: some registries report a referrer's
	// config media type (the OCI empty config, as cosign writes it) instead
	// of its artifactType.
	all, err := v.reg.Referrers(ctx, repo.Digest(ad.String()), "")
	if err != nil {
		return "", "", nil, fmt.Errorf("signatures of %s: %w", ad, err)
	}
	var descs []v1.Descriptor
	for _, d := range all {
		if d.ArtifactType == BundleMediaType || d.ArtifactType == EmptyConfigMediaType {
			descs = append(descs, d)
		}
	}
	if len(descs) == 0 {
		return "", "", nil, fmt.Errorf("%w: no Sigstore bundle refers to artifact %s", trust.ErrUnsigned, ad)
	}
	// Bundles that name a trusted key id first; the name is only a hint.
	trusted := map[string]bool{}
	for _, k := range v.keys {
		trusted[k.pub.ID] = true
	}
	sort.SliceStable(descs, func(i, j int) bool {
		return trusted[descs[i].Annotations[AnnotationKeyID]] && !trusted[descs[j].Annotations[AnnotationKeyID]]
	})
	// Bundles naming a trusted key id are examined, up to maxClaimed (junk
	// that copies the id costs two requests each), then at most
	// maxSignatures others (signatures made by cosign carry no id).
	total := len(descs)
	claimed := 0
	for claimed < len(descs) && trusted[descs[claimed].Annotations[AnnotationKeyID]] {
		claimed++
	}
	if claimed > v.maxClaimed {
		// Only the bound's worth of the claiming ones, then the others.
		descs = append(descs[:v.maxClaimed:v.maxClaimed], descs[claimed:]...)
		claimed = v.maxClaimed
	}
	n := min(len(descs), claimed+v.maxSignatures)
	var reasons []string
	claimedTrusted := false
	for _, d := range descs[:n] {
		if err := ctx.Err(); err != nil {
			return "", "", nil, err
		}
		b, err := v.bundle(ctx, repo, d, ad)
		if err != nil {
			if !errors.Is(err, errNotABundle) {
				return "", "", nil, err
			}
			reasons = append(reasons, fmt.Sprintf("%s: %v", d.Digest, err))
			continue
		}
		hint := ""
		if pk := b.GetVerificationMaterial().GetPublicKey(); pk != nil {
			hint = pk.GetHint()
		}
		digest, _ := hex.DecodeString(ad.Hex)
		for _, k := range v.orderKeys(hint) {
			if hint == k.pub.Hint {
				claimedTrusted = true
			}
			sb, err := sgbundle.NewBundle(b)
			if err != nil {
				reasons = append(reasons, fmt.Sprintf("%s: %v", d.Digest, err))
				break
			}
			r, err := k.sv.Verify(sb, verify.NewPolicy(verify.WithArtifactDigest("sha256", digest), verify.WithKey()))
			if err != nil {
				if hint == k.pub.Hint {
					reasons = append(reasons, fmt.Sprintf("%s: key %s: %v", d.Digest, k.pub.ID, err))
				}
				continue
			}
			if r.Statement == nil || r.Statement.GetPredicateType() != PredicateType {
				reasons = append(reasons, fmt.Sprintf("%s: key %s signed predicate type %q, not %s", d.Digest, k.pub.ID, r.Statement.GetPredicateType(), PredicateType))
				continue
			}
			pred, err := predicateOf(b)
			if err != nil {
				reasons = append(reasons, fmt.Sprintf("%s: %v", d.Digest, err))
				continue
			}
			return k.pub.ID, d.Digest.String(), pred, nil
		}
		if hint != "" && !claimedTrusted {
			reasons = append(reasons, fmt.Sprintf("%s: key hint %s is not a trusted key", d.Digest, hint))
		}
	}
	more := ""
	if total > n {
		more = fmt.Sprintf(" (examined %d of %d signature referrers)", n, total)
	}
	reason := trust.ErrUnknownKey
	switch {
	case claimedTrusted:
		reason = trust.ErrBadSignature
	case len(reasons) == n && allNotBundles(reasons):
		reason = trust.ErrUnsigned
	}
	return "", "", nil, fmt.Errorf("%w: %d signature referrers of %s, none verifies with trusted keys %s%s: %s",
		reason, total, ad, strings.Join(v.KeyIDs(), ", "), more, strings.Join(firstN(reasons, 5), "; "))
}

var errNotABundle = errors.New("not a Sigstore bundle")

func allNotBundles(reasons []string) bool {
	for _, r := range reasons {
		if !strings.Contains(r, errNotABundle.Error()) {
			return false
		}
	}
	return true
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// orderKeys returns the trusted keys, the one whose hint matches first.
func (v *Verifier) orderKeys(hint string) []*trustedKey {
	out := make([]*trustedKey, 0, len(v.keys))
	for _, k := range v.keys {
		if k.pub.Hint == hint {
			out = append(out, k)
		}
	}
	for _, k := range v.keys {
		if k.pub.Hint != hint {
			out = append(out, k)
		}
	}
	return out
}

// bundle reads the signature manifest d and its bundle layer. Anything that
// is not a well-formed bundle referrer of the artifact is errNotABundle,
// including a manifest or bundle blob the registry does not have or serves
// with other bytes than its descriptor says: anyone who can push can list
// such a referrer, and it must cost that signature, not the verification.
// Only a registry that could not answer is another error.
func (v *Verifier) bundle(ctx context.Context, repo name.Repository, d v1.Descriptor, ad v1.Hash) (*protobundle.Bundle, error) {
	if d.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("%w: manifest digest %s is not sha256", errNotABundle, d.Digest)
	}
	raw, _, err := v.reg.FetchManifest(ctx, repo.Digest(d.Digest.String()))
	if err != nil {
		return nil, junkOr(fmt.Errorf("signature manifest %s: %w", d.Digest, err))
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", errNotABundle, err)
	}
	if m.Subject == nil || m.Subject.Digest != ad {
		return nil, fmt.Errorf("%w: manifest subject is not %s", errNotABundle, ad)
	}
	if len(m.Layers) != 1 || !strings.HasPrefix(string(m.Layers[0].MediaType), "application/vnd.dev.sigstore.bundle") {
		return nil, fmt.Errorf("%w: want one bundle layer", errNotABundle)
	}
	l := m.Layers[0]
	if l.Size <= 0 || l.Size > maxBundleSize {
		return nil, fmt.Errorf("%w: bundle of %d bytes", errNotABundle, l.Size)
	}
	if l.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("%w: bundle digest %s is not sha256", errNotABundle, l.Digest)
	}
	b, err := readBlob(ctx, v, repo, l)
	if err != nil {
		return nil, junkOr(fmt.Errorf("bundle: %w", err))
	}
	var pb protobundle.Bundle
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &pb); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotABundle, err)
	}
	return &pb, nil
}

// junkOr marks err, from reading a signature referrer, as errNotABundle
// when it says the referrer's content is missing or bad
// (trust.IsBadContent), and leaves it as it is when the registry could not
// answer.
func junkOr(err error) error {
	if trust.IsBadContent(err) {
		return fmt.Errorf("%w: %w", errNotABundle, err)
	}
	return err
}

func predicateOf(b *protobundle.Bundle) (*Predicate, error) {
	env := b.GetDsseEnvelope()
	if env == nil {
		return nil, errors.New("bundle holds no DSSE envelope")
	}
	var st statement
	if err := json.Unmarshal(env.GetPayload(), &st); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	return parsePredicate(st.Predicate)
}

// readBlob reads a small blob whole and checks its size and digest.
func readBlob(ctx context.Context, v *Verifier, repo name.Repository, d v1.Descriptor) ([]byte, error) {
	rc, err := v.reg.FetchBlob(ctx, repo, d)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	// A descriptor giving a smaller size than the blob's stops the read
	// before the registry client's own check at EOF: this one catches it.
	sum := sha256.Sum256(b)
	if int64(len(b)) != d.Size || d.Digest.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != d.Digest.Hex {
		return nil, fmt.Errorf("blob %s: %w: read %d bytes hashing to sha256:%x, the descriptor says %d", d.Digest, registry.ErrDigestMismatch, len(b), sum, d.Size)
	}
	return b, nil
}

// artifactConfig reads and validates the artifact's config blob.
func (v *Verifier) artifactConfig(ctx context.Context, repo name.Repository, d v1.Descriptor) (*artifact.Config, error) {
	if string(d.MediaType) != artifact.ArtifactType {
		return nil, fmt.Errorf("media type %s", d.MediaType)
	}
	if d.Size > 16<<20 {
		return nil, fmt.Errorf("%d bytes is too large", d.Size)
	}
	b, err := readBlob(ctx, v, repo, d)
	if err != nil {
		return nil, err
	}
	var cfg artifact.Config
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

type untrustedImage struct{ error }

// image reads the subject image manifest and config by digest and returns
// its layer digests and diffIDs.
func (v *Verifier) image(ctx context.Context, subject name.Digest) ([]string, []string, error) {
	raw, _, err := v.reg.FetchManifest(ctx, subject)
	if err != nil {
		return nil, nil, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil || len(m.Layers) == 0 {
		return nil, nil, untrustedImage{fmt.Errorf("subject %s is not an image manifest", subject.DigestStr())}
	}
	if m.Config.Size > 4<<20 {
		return nil, nil, untrustedImage{fmt.Errorf("image config of %d bytes is too large", m.Config.Size)}
	}
	cb, err := readBlob(ctx, v, subject.Context(), m.Config)
	if err != nil {
		return nil, nil, err
	}
	var ic v1.ConfigFile
	if err := json.Unmarshal(cb, &ic); err != nil {
		return nil, nil, untrustedImage{fmt.Errorf("image config: %v", err)}
	}
	if len(ic.RootFS.DiffIDs) != len(m.Layers) {
		return nil, nil, untrustedImage{fmt.Errorf("image config lists %d diffIDs for %d layers", len(ic.RootFS.DiffIDs), len(m.Layers))}
	}
	var layers, diffIDs []string
	for i, l := range m.Layers {
		layers = append(layers, l.Digest.String())
		diffIDs = append(diffIDs, ic.RootFS.DiffIDs[i].String())
	}
	return layers, diffIDs, nil
}
