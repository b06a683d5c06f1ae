// Package trust decides whether a node may use a cimconv artifact: the
// Verifier contract that the node-side consumers (converter fetch, the
// snapshotter's fast path) call before they place any file, and the
// development-only AllowUnsigned policy. Signature formats and key handling
// live behind Verifier so consumers never change when they do.
package trust
