// Package registry is all registry I/O, through go-containerregistry:
// resolving an image reference to the Windows manifests to convert, streaming
// layers, pushing artifact blobs and manifests, and finding artifacts through
// the OCI 1.1 referrers API or the sha256-<hex> fallback tag.
//
// It knows nothing of CIMs, builders or queues.
//
// What it uses of go-containerregistry: reference parsing (pkg/name), the
// v1 types, keychains (pkg/authn) and the authenticating transport
// (remote/transport: ping, basic and bearer token exchange). The registry
// API calls themselves are made here, not through remote.Write / remote.Put,
// because conversion needs things remote does not offer:
//   - pushing a manifest with a subject must not update the fallback tag on
//     its own: here the fallback index is updated only when the registry did
//     not answer OCI-Subject and has no referrers API, serialized per subject
//     (an in-process mutex, plus If-Match when the registry returns an ETag),
//     and it can be switched off (WithReferrersFallback(false): then a
//     registry without the referrers API is refused before anything is pushed);
//   - layers stream as stored, hashed and counted as they pass, resumed with
//     Range requests after a mid-stream reset, never written to disk;
//   - one retry layer (under authentication, so token requests retry too)
//     honouring Retry-After; a blob upload is retried by re-opening its
//     content;
//   - plain HTTP only for loopback and hosts named with WithInsecure (ggcr
//     alone would also try http for RFC 1918 addresses).
//
// Errors are *Error values (operation, reference, Transient) wrapping the
// sentinels (ErrNotWindows, ErrNoMatch, ErrForeignLayerRefused,
// ErrDigestMismatch, ErrNotFound, ErrReferrersUnsupported,
// ErrInsecureRefused) or ggcr's *transport.Error. Every sentinel is of an
// errdefs kind and a Transient error is errdefs.ErrUnavailable, so callers
// decide retry-or-fail with errdefs (errdefs.Classify), never by message.
//
// Windows version matching (OSVersionPolicy "compatible") follows
// Microsoft's published stable-ABI rule as encoded in hcsshim's osversion
// package; it has not been validated on Windows hosts by this project.
//
// Kubernetes image pull secrets: mount the kubernetes.io/dockerconfigjson
// Secret into the pod and pass its file to WithDockerConfig (k8schain is not
// a dependency).
package registry
