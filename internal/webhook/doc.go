// Package webhook turns registry notifications (CNCF distribution, Harbor,
// CloudEvents/zot, Azure Container Registry) into conversion requests, after
// authenticating them and filtering by the operator's registry allowlist.
//
// It owns: the HTTP endpoints under /webhooks/ (distribution, harbor,
// cloudevents, acr), the payload parsers, authentication (bearer token, HMAC
// with replay window), the registry allowlist, and the filters that keep
// only manifest pushes and drop events about our own artifacts (by
// artifactType, config media type or subject; never by tag suffix).
//
// It must not touch: the queue (it hands neutral Events to a Sink the service
// provides), the registry (it never fetches anything the event names: the
// worker resolves the image, its platform and whether it is Windows), and
// metric names (outcomes go to a counter callback the service maps onto
// cimconv_events_total).
package webhook
