// Package registry is all registry I/O, through go-containerregistry:
// resolving an image reference to the Windows manifests to convert, streaming
// layers, pushing artifact blobs and manifests, and finding artifacts through
// the OCI 1.1 referrers API or the sha256-<hex> fallback tag.
//
// It knows nothing of CIMs, builders or queues.
package registry
