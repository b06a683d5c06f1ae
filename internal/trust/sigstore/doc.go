// Package sigstore signs cimconv artifacts with a key and verifies them on
// nodes, in the Sigstore bundle format (v0.3, a DSSE envelope holding an
// in-toto statement) stored as an OCI 1.1 referrer of the artifact manifest,
// the layout `cosign sign --key` writes and `cosign verify --key
// --insecure-ignore-tlog` reads. Key based only: no transparency log, no
// certificate authority, no timestamps.
//
// The Signer runs on workers after an artifact is pushed. The Verifier
// implements trust.Verifier for nodes: it accepts an artifact only when a
// bundle signed by one of several trusted keys names the artifact manifest
// digest, and the artifact is bound (subject manifest digest, each source
// layer digest, diffID and chainID) to the image it was found for.
package sigstore
