package sigstore

import (
	"encoding/json"
	"fmt"

	"github.com/cimconv/cimconv/internal/artifact"
)

// Media types and annotations of the signature referrer (as cosign writes
// them).
const (
	// BundleMediaType is the referrer's artifactType and its one layer's
	// media type.
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// EmptyConfigMediaType is the OCI empty config ({}).
	EmptyConfigMediaType = "application/vnd.oci.empty.v1+json"
	// AnnotationBundleContent and AnnotationPredicateType are cosign's.
	AnnotationBundleContent = "dev.sigstore.bundle.content"
	AnnotationPredicateType = "dev.sigstore.bundle.predicateType"
	// AnnotationKeyID names the signing key's id in the referrer listing so a
	// verifier looks at bundles from trusted keys first. It is a hint only:
	// anyone can write it.
	AnnotationKeyID = "io.cimconv.signature.keyid"

	// PredicateType is the in-toto predicate of a cimconv artifact signature.
	PredicateType = "https://cimconv.io/attestations/cim-artifact/v1"
	// PayloadType is the DSSE payload type of an in-toto statement.
	PayloadType = "application/vnd.in-toto+json"

	// maxBundleSize bounds a bundle blob a verifier reads.
	maxBundleSize = 1 << 20
)

// emptyConfig is the OCI empty descriptor's content.
var emptyConfig = []byte("{}")

// Predicate is the signed statement's predicate: what the artifact was built
// for. The statement's subject is the artifact manifest digest.
type Predicate struct {
	// Subject is the image manifest digest the artifact belongs to.
	Subject string `json:"subject"`
	// ChainID is the top layer's chainID.
	ChainID string `json:"chainID,omitempty"`
	// Builder and Format repeat the artifact config's.
	Builder string `json:"builder,omitempty"`
	Format  string `json:"format,omitempty"`
}

type statement struct {
	Type          string          `json:"_type"`
	Subject       []stmtSubject   `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

type stmtSubject struct {
	Name   string            `json:"name,omitempty"`
	Digest map[string]string `json:"digest"`
}

func parsePredicate(raw []byte) (*Predicate, error) {
	var p Predicate
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("predicate: %w", err)
	}
	return &p, nil
}

// PredicateFor is the predicate a worker signs for an artifact with config
// cfg.
func PredicateFor(cfg *artifact.Config) Predicate {
	p := Predicate{Subject: cfg.Subject, Builder: cfg.Builder, Format: cfg.Format}
	if n := len(cfg.Layers); n > 0 {
		p.ChainID = cfg.Layers[n-1].ChainID
	}
	return p
}
