// Package registrytest starts real registries in-process on 127.0.0.1 for
// tests (go-containerregistry's pkg/registry with the referrers API, and CNCF
// distribution v3 without it) and pushes generated Windows images to them.
//
// Images are built and pushed with go-containerregistry's remote package,
// not with internal/registry, so tests of the client do not check it
// against itself. Test-only: nothing outside _test.go files imports it.
package registrytest
