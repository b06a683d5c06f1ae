// Package devenv is the single-machine development environment behind
// `converter serve --dev` and `converter dev registry`: a loopback OCI
// registry (go-containerregistry's, with the referrers API) and a generated
// sample Windows image pushed into it.
//
// It is never used in production paths; it must not be imported by convert,
// worker or queue.
package devenv
