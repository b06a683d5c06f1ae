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
//
// # Registry setup
//
//   - distribution: notifications.endpoints[].url = .../webhooks/distribution,
//     headers: {Authorization: [Bearer TOKEN]}; set
//     notifications.events.includereferences: true, without which a push of
//     our own artifact cannot be told from an image push here (the worker
//     then has to drop it). Distribution retries a refused delivery until it
//     gets a 2xx/3xx, so allowlist what it notifies about.
//   - Harbor: webhook policy, payload format Default or CloudEvents, URL
//     .../webhooks/harbor, auth header "Bearer TOKEN" (sent verbatim as
//     Authorization; the bare token also passes).
//   - zot: extensions.events http sink to .../webhooks/cloudevents?registry=HOST
//     (zot does not name itself in its events); credentials.token (sent as
//     Bearer by recent zot) or username/password with the token as the
//     password (older zot only sends Basic). Any events.typePrefix works.
//   - ACR: webhook with a custom header "Authorization: Bearer TOKEN" to
//     .../webhooks/acr; Event Grid subscriptions with the CloudEvents 1.0
//     schema work on /webhooks/acr or /webhooks/cloudevents.
//   - Anything else that can sign: HMAC-SHA256 over timestamp + "." + body,
//     hex (optionally "sha256=") in X-Cimconv-Signature, Unix seconds in
//     X-Cimconv-Timestamp.
//
// Payload shapes are taken from each project's source or documentation (see
// testdata/README.md); only distribution's is exercised against the real
// registry in tests. Harbor, zot, ACR and Event Grid deliveries have not been
// observed live.
package webhook
