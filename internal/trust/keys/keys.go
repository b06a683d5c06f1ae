package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
)

// ErrKey means a key file could not be used; the error names the file and why.
var ErrKey = errors.New("unusable key")

// PrivateKey is a loaded signing key.
type PrivateKey struct {
	Signer crypto.Signer
	Public *PublicKey
}

// PublicKey is a loaded public key with its identifiers.
type PublicKey struct {
	Key crypto.PublicKey
	// ID is "sha256:<hex>" of the PKIX DER encoding: what logs, results and
	// `converter verify` print.
	ID string
	// Hint is the Sigstore bundle key hint: base64 of the same SHA-256.
	Hint string
	// Source is where the key came from (a file name), for messages.
	Source string
	// Algorithm is the Sigstore algorithm the key signs with.
	Algorithm protocommon.PublicKeyDetails
	// PEM is the PKIX PEM encoding.
	PEM []byte
}

// LoadPrivateKey reads a PEM private key (PKCS#8 "PRIVATE KEY" or SEC1 "EC
// PRIVATE KEY") from path.
func LoadPrivateKey(path string) (*PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: signing key %s: %w", ErrKey, path, err)
	}
	k, err := ParsePrivateKey(b, path)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// ParsePrivateKey parses a PEM private key; source names it in errors.
func ParsePrivateKey(b []byte, source string) (*PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: signing key %s: no PEM block", ErrKey, source)
	}
	var key any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("%w: signing key %s: %s is encrypted; give an unencrypted PKCS#8 key (the file is the secret, keep it in a Kubernetes Secret)", ErrKey, source, blk.Type)
	default:
		return nil, fmt.Errorf("%w: signing key %s: PEM block %q, want \"PRIVATE KEY\" or \"EC PRIVATE KEY\"", ErrKey, source, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: signing key %s: %w", ErrKey, source, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: signing key %s: %T cannot sign", ErrKey, source, key)
	}
	pub, err := NewPublicKey(s.Public(), source)
	if err != nil {
		return nil, err
	}
	return &PrivateKey{Signer: s, Public: pub}, nil
}

// LoadPublicKeys reads one PEM public key ("PUBLIC KEY", PKIX) from each path.
// Two files holding the same key are an error: it hides a rotation mistake.
func LoadPublicKeys(paths ...string) ([]*PublicKey, error) {
	var out []*PublicKey
	seen := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%w: trusted key %s: %w", ErrKey, p, err)
		}
		k, err := ParsePublicKey(b, p)
		if err != nil {
			return nil, err
		}
		if prev, ok := seen[k.ID]; ok {
			return nil, fmt.Errorf("%w: trusted key %s is the same key as %s (%s)", ErrKey, p, prev, k.ID)
		}
		seen[k.ID] = p
		out = append(out, k)
	}
	return out, nil
}

// ParsePublicKey parses a PEM PKIX public key; source names it in errors.
func ParsePublicKey(b []byte, source string) (*PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: trusted key %s: no PEM block", ErrKey, source)
	}
	if blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: trusted key %s: PEM block %q, want \"PUBLIC KEY\"", ErrKey, source, blk.Type)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: trusted key %s: %w", ErrKey, source, err)
	}
	return NewPublicKey(k, source)
}

// NewPublicKey wraps k with its identifiers.
func NewPublicKey(k crypto.PublicKey, source string) (*PublicKey, error) {
	alg, err := algorithm(k)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrKey, source, err)
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrKey, source, err)
	}
	sum := sha256.Sum256(der)
	return &PublicKey{
		Key:       k,
		ID:        "sha256:" + hex.EncodeToString(sum[:]),
		Hint:      base64.StdEncoding.EncodeToString(sum[:]),
		Source:    source,
		Algorithm: alg,
		PEM:       pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
	}, nil
}

func algorithm(k crypto.PublicKey) (protocommon.PublicKeyDetails, error) {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256, nil
		case elliptic.P384():
			return protocommon.PublicKeyDetails_PKIX_ECDSA_P384_SHA_384, nil
		}
		return 0, fmt.Errorf("ECDSA curve %s is not supported (use P-256 or P-384)", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return protocommon.PublicKeyDetails_PKIX_ED25519, nil
	}
	return 0, fmt.Errorf("%T keys are not supported (use ECDSA P-256/P-384 or Ed25519)", k)
}

// MarshalPrivateKey encodes s as a PKCS#8 PEM block (tests and key
// generation).
func MarshalPrivateKey(s crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(s)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
