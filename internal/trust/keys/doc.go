// Package keys loads the signing key of a worker and the trusted public keys
// of a node from PEM files, and names each key by a stable key id (the
// SHA-256 of its PKIX encoding). ECDSA P-256/P-384 and Ed25519 keys are
// accepted; encrypted cosign key files are refused with a clear error.
package keys
