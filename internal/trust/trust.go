package trust

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// ErrUntrusted means an artifact failed verification: unsigned, signed by a
// key that is not trusted, or not bound to the image it was found for. Callers
// treat it as "do not use this artifact", never as a transient failure.
var ErrUntrusted = errors.New("artifact not trusted")

// Request names what a node is about to use.
type Request struct {
	// Subject is the platform-specific image manifest being pulled.
	Subject name.Digest
	// Artifact is the cimconv artifact manifest found for Subject (from the
	// referrers API or the fallback tag), in Subject's repository.
	Artifact v1.Descriptor
	// Manifest is the artifact manifest's raw bytes, already checked against
	// Artifact.Digest by the caller.
	Manifest []byte
}

// Result says what verification established.
type Result struct {
	// Signed is false only under AllowUnsigned.
	Signed bool `json:"signed"`
	// KeyID names the trusted key that signed the artifact.
	KeyID string `json:"keyID,omitempty"`
	// Checks lists every check made, in order, for logs and `converter verify`.
	Checks []string `json:"checks,omitempty"`
	// Signature is the digest of the signature manifest that verified.
	Signature string `json:"signature,omitempty"`
}

// Verifier decides whether an artifact may be used for a subject. An error
// wrapping ErrUntrusted is a verdict; any other error (registry unreachable)
// means no verdict was reached. Either way the caller must not use the
// artifact. On error a Verifier may still return a Result listing the checks
// made up to the failure (for `converter verify`); it never means success.
type Verifier interface {
	Verify(ctx context.Context, req Request) (*Result, error)
}

// RecordChecker is a Verifier that can judge, without the registry, a
// verdict reached earlier and recorded: a layer cached by `converter fetch
// --root` carries the Result of the verifier that fetched it, whose policy
// may not be the one of the snapshotter placing it (--trust-unsigned, other
// keys).
type RecordChecker interface {
	// CheckRecorded returns nil when res satisfies the verifier's policy
	// now, else an error wrapping ErrUntrusted saying why.
	CheckRecorded(res *Result) error
}

// CheckRecorded asks v whether res, a verdict recorded earlier, satisfies
// v's policy now. No verdict, or a verifier that cannot judge one (not a
// RecordChecker), is a refusal.
func CheckRecorded(v Verifier, res *Result) error {
	if res == nil {
		return fmt.Errorf("%w: no verdict recorded", ErrUntrusted)
	}
	rc, ok := v.(RecordChecker)
	if !ok {
		return fmt.Errorf("%w: verifier %T cannot judge a recorded verdict", ErrUntrusted, v)
	}
	return rc.CheckRecorded(res)
}

// AllowUnsigned accepts every artifact without a signature check. It exists
// for development (--trust-unsigned): anyone with push rights to a repository
// can attach an artifact to any image in it.
func AllowUnsigned() Verifier { return allowUnsigned{} }

type allowUnsigned struct{}

func (allowUnsigned) Verify(_ context.Context, req Request) (*Result, error) {
	if req.Artifact.Digest == (v1.Hash{}) {
		return nil, fmt.Errorf("%w: no artifact digest for %s", ErrUntrusted, req.Subject)
	}
	return &Result{Signed: false, Checks: []string{"signature: not checked (--trust-unsigned)"}}, nil
}

// CheckRecorded accepts every verdict, signed or not: this policy accepts
// every artifact.
func (allowUnsigned) CheckRecorded(*Result) error { return nil }

// Reasons an artifact is not trusted. Each wraps ErrUntrusted, so
// errors.Is(err, ErrUntrusted) holds for all of them; consumers count by the
// finer reason.
var (
	// ErrUnsigned: no signature refers to the artifact.
	ErrUnsigned = fmt.Errorf("%w: unsigned", ErrUntrusted)
	// ErrUnknownKey: signed, but by no trusted key.
	ErrUnknownKey = fmt.Errorf("%w: not signed by a trusted key", ErrUntrusted)
	// ErrBadSignature: a signature claims a trusted key but does not verify
	// for this artifact (tampered, or copied from another artifact).
	ErrBadSignature = fmt.Errorf("%w: signature does not verify", ErrUntrusted)
	// ErrUnbound: the signed artifact was built for another image (subject,
	// layer digest, diffID or chainID differ).
	ErrUnbound = fmt.Errorf("%w: not bound to this image", ErrUntrusted)
	// ErrMalformed: the artifact manifest a registry lists is missing, or
	// is not what its descriptor says (digest, size, digest algorithm).
	// Anyone who can push can list such junk, so it is a refusal of that
	// candidate, never a failure of the search.
	ErrMalformed = fmt.Errorf("%w: missing or malformed in the registry", ErrUntrusted)
)

// IsBadContent reports whether err, from reading an object a registry
// listed (a candidate artifact, a signature, their blobs), says the object
// is missing or is not what its descriptor says (not found, digest or size
// mismatch, invalid): what anyone who can push can plant, to be refused like
// any other junk. A registry that could not answer (network, 5xx, 429, a
// cancelled or expired context) or refused the client (auth) is not: that
// stays an error, since the next try may succeed.
func IsBadContent(err error) bool {
	return errdefs.Classify(err) == errdefs.RetryCannotHelp
}
