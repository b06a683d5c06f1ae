package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Endpoint names: the last path element under /webhooks/ and Event.Source.
const (
	SourceDistribution = "distribution"
	SourceHarbor       = "harbor"
	SourceCloudEvents  = "cloudevents"
	SourceACR          = "acr"
)

// Outcomes reported to the event counter (WithEventCounter).
const (
	OutcomeAccepted     = "accepted"
	OutcomeDuplicate    = "duplicate"
	OutcomeIgnored      = "ignored"
	OutcomeUnauthorized = "unauthorized"
	OutcomeRefused      = "refused"
	OutcomeInvalid      = "invalid"
	OutcomeError        = "error"
)

// Defaults.
const (
	DefaultMaxBodyBytes    int64 = 1 << 20
	DefaultOwnArtifactType       = "application/vnd.cimconv.cim.v1+json"
	DefaultSignatureHeader       = "X-Cimconv-Signature"
	DefaultTimestampHeader       = "X-Cimconv-Timestamp"
	DefaultReplayWindow          = 5 * time.Minute

	// dedupeWindow bounds how long an accepted event id is remembered, so a
	// registry that retries a whole envelope does not queue an event twice.
	dedupeWindow   = 10 * time.Minute
	dedupeCapacity = 4096
)

// ErrDuplicate may be returned (wrapped) by a Sink to say the event was
// already queued; the handler then counts it as a duplicate, not a failure.
var ErrDuplicate = errors.New("webhook: duplicate event")

var endpoints = []string{SourceDistribution, SourceHarbor, SourceCloudEvents, SourceACR}

// Event is a registry's announcement that a manifest was pushed, in a form
// that does not depend on the registry that sent it.
type Event struct {
	Source        string // "distribution" | "harbor" | "cloudevents" | "acr"
	Registry      string // host[:port] as the registry names itself
	Repository    string
	Digest        string // manifest digest when the event has one
	Tag           string
	MediaType     string // manifest media type when known
	ArtifactType  string // when known (OCI artifact manifests)
	SubjectDigest string // when the pushed manifest has a subject (it is itself an artifact)
	ID            string // the registry's event id (for logs and dedupe)
}

// Ref returns "registry/repo@digest", or "registry/repo:tag" when the event
// has no digest.
func (e Event) Ref() string {
	if e.Digest != "" {
		return e.Registry + "/" + e.Repository + "@" + e.Digest
	}
	return e.Registry + "/" + e.Repository + ":" + e.Tag
}

// Sink receives the events the handler accepts. An error makes the handler
// answer 503 so that the registry retries.
type Sink interface {
	Submit(ctx context.Context, e Event) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, e Event) error

// Submit calls f.
func (f SinkFunc) Submit(ctx context.Context, e Event) error { return f(ctx, e) }

// Auth is the credential check of one endpoint. When both a bearer token and
// an HMAC secret are set, a request must pass both. Secrets are never logged.
type Auth struct {
	// BearerToken is compared in constant time with the request's
	// Authorization header, given as "Bearer <token>", as the bare token
	// (Harbor sends its "auth header" verbatim), or as the password of
	// "Basic" credentials (zot's HTTP sink only speaks Basic).
	BearerToken string
	// HMACSecret keys an HMAC-SHA256 over timestamp + "." + body; the
	// signature is hex, optionally prefixed with "sha256=".
	HMACSecret []byte
	// SignatureHeader and TimestampHeader name the headers carrying the
	// signature and the Unix timestamp (seconds). Defaults:
	// X-Cimconv-Signature, X-Cimconv-Timestamp.
	SignatureHeader, TimestampHeader string
	// ReplayWindow is how far a timestamp may be from now, either way, and
	// how long a signature is remembered: a request with the same signature
	// (the sender's retry, or a replay) is answered from the first delivery
	// and never processed again, unless that delivery failed. Default 5m.
	ReplayWindow time.Duration
}

// Option configures a Handler.
type Option func(*config) error

type config struct {
	auth          map[string]Auth
	noAuth        map[string]bool
	allow         []allowEntry
	maxBody       int64
	ownType       string
	log           *zap.Logger
	count         func(source, outcome string)
	now           func() time.Time
	dedupeWindow  time.Duration
	dedupeEntries int
}

// WithAuth sets the credential check of one endpoint ("distribution",
// "harbor", "cloudevents", "acr"), or of every endpoint without its own with
// "*". An endpoint with neither Auth nor WithInsecureNoAuth refuses every
// request with 401.
func WithAuth(endpoint string, a Auth) Option {
	return func(c *config) error {
		if endpoint != "*" && !isEndpoint(endpoint) {
			return fmt.Errorf("webhook auth: unknown endpoint %q (want one of %s or \"*\")", endpoint, strings.Join(endpoints, ", "))
		}
		if a.BearerToken == "" && len(a.HMACSecret) == 0 {
			return fmt.Errorf("webhook auth for %q: neither a bearer token nor an HMAC secret is set", endpoint)
		}
		if a.ReplayWindow < 0 {
			return fmt.Errorf("webhook auth for %q: negative replay window %s", endpoint, a.ReplayWindow)
		}
		if a.SignatureHeader == "" {
			a.SignatureHeader = DefaultSignatureHeader
		}
		if a.TimestampHeader == "" {
			a.TimestampHeader = DefaultTimestampHeader
		}
		if a.ReplayWindow == 0 {
			a.ReplayWindow = DefaultReplayWindow
		}
		c.auth[endpoint] = a
		return nil
	}
}

// WithInsecureNoAuth lets the named endpoints ("*" for all) accept requests
// without credentials. Meant for loopback development setups only.
func WithInsecureNoAuth(names ...string) Option {
	return func(c *config) error {
		for _, n := range names {
			if n != "*" && !isEndpoint(n) {
				return fmt.Errorf("webhook no-auth: unknown endpoint %q", n)
			}
			c.noAuth[n] = true
		}
		return nil
	}
}

// WithAllowedRegistries sets the registries events may name: "host[:port]"
// allows every repository of that registry, "host[:port]/repo-prefix" only
// the repositories at or below the prefix. Events for anything else are
// refused (403), so a webhook cannot make workers contact arbitrary hosts.
// Without this option every event is refused.
func WithAllowedRegistries(hosts ...string) Option {
	return func(c *config) error {
		for _, h := range hosts {
			e, err := parseAllowEntry(h)
			if err != nil {
				return err
			}
			c.allow = append(c.allow, e)
		}
		return nil
	}
}

// WithMaxBodyBytes limits request bodies (default 1 MiB); larger ones get 413.
func WithMaxBodyBytes(n int64) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("webhook max body bytes: %d is not positive", n)
		}
		c.maxBody = n
		return nil
	}
}

// WithOwnArtifactType sets the artifact type cimconv publishes (default
// application/vnd.cimconv.cim.v1+json); pushes of it are dropped so that
// publishing an artifact never triggers a conversion of it.
func WithOwnArtifactType(t string) Option {
	return func(c *config) error {
		if t == "" {
			return errors.New("webhook own artifact type: empty")
		}
		c.ownType = t
		return nil
	}
}

// WithLogger sets the logger (default: no logs).
func WithLogger(l *zap.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("webhook logger: nil")
		}
		c.log = l
		return nil
	}
}

// WithEventCounter receives one call per event (or per request when the
// request fails before its events are read) with the endpoint name and one
// of the Outcome* constants.
func WithEventCounter(f func(source, outcome string)) Option {
	return func(c *config) error {
		if f == nil {
			return errors.New("webhook event counter: nil")
		}
		c.count = f
		return nil
	}
}

// Handler serves POST /webhooks/{distribution,harbor,cloudevents,acr}. It is
// safe for concurrent use.
type Handler struct {
	sink   Sink
	cfg    config
	replay *expirySet[signedAnswer] // signatures within their replay window, with their first answer
	seen   *expirySet[struct{}]     // accepted event ids, for dedupe of retried envelopes
}

// New returns a Handler that submits accepted events to sink.
func New(sink Sink, opts ...Option) (*Handler, error) {
	if sink == nil {
		return nil, errors.New("webhook: nil sink")
	}
	c := config{
		auth:          map[string]Auth{},
		noAuth:        map[string]bool{},
		maxBody:       DefaultMaxBodyBytes,
		ownType:       DefaultOwnArtifactType,
		log:           zap.NewNop(),
		count:         func(string, string) {},
		now:           time.Now,
		dedupeWindow:  dedupeWindow,
		dedupeEntries: dedupeCapacity,
	}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	return &Handler{
		sink:   sink,
		cfg:    c,
		replay: newExpirySet[signedAnswer](0),
		seen:   newExpirySet[struct{}](c.dedupeEntries),
	}, nil
}

func isEndpoint(s string) bool {
	for _, e := range endpoints {
		if e == s {
			return true
		}
	}
	return false
}

// response is the short JSON body of every answer.
type response struct {
	Accepted   int    `json:"accepted"`
	Ignored    int    `json:"ignored"`
	Duplicates int    `json:"duplicates,omitempty"`
	Refused    int    `json:"refused,omitempty"`
	Invalid    int    `json:"invalid,omitempty"`
	Failed     int    `json:"failed,omitempty"`
	Error      string `json:"error,omitempty"`
}

// ServeHTTP serves /webhooks/{endpoint}, and /{endpoint} so that the
// handler also works behind http.StripPrefix("/webhooks", ...).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	endpoint, ok := strings.CutPrefix(r.URL.Path, "/webhooks/")
	if !ok {
		endpoint = strings.TrimPrefix(r.URL.Path, "/")
	}
	if !isEndpoint(endpoint) {
		writeJSON(w, http.StatusNotFound, response{Error: fmt.Sprintf("no webhook endpoint %q (want /webhooks/{%s})", r.URL.Path, strings.Join(endpoints, ","))})
		return
	}
	if r.Method == http.MethodOptions && endpoint == SourceCloudEvents {
		// CloudEvents HTTP webhook validation handshake (Azure Event Grid
		// and others send it before delivering).
		if origin := r.Header.Get("WebHook-Request-Origin"); origin != "" {
			w.Header().Set("WebHook-Allowed-Origin", origin)
			w.Header().Set("Allow", "POST, OPTIONS")
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, response{Error: fmt.Sprintf("method %s not allowed on %s (use POST)", r.Method, r.URL.Path)})
		return
	}
	log := h.cfg.log.With(zap.String("source", endpoint), zap.String("remote", r.RemoteAddr))

	// The bearer token is checked before the body is read, so
	// unauthenticated senders cannot make us buffer a megabyte.
	auth, authOK := h.authFor(endpoint)
	if !authOK {
		h.unauthorized(w, log, endpoint, fmt.Sprintf("endpoint %s has no credentials configured", endpoint))
		return
	}
	if auth != nil && auth.BearerToken != "" {
		if err := checkToken(r.Header.Get("Authorization"), auth.BearerToken); err != nil {
			h.unauthorized(w, log, endpoint, err.Error())
			return
		}
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.cfg.count(endpoint, OutcomeInvalid)
			log.Warn("webhook refused", zap.String("outcome", OutcomeInvalid), zap.String("reason", "body too large"), zap.Int64("limit", h.cfg.maxBody))
			writeJSON(w, http.StatusRequestEntityTooLarge, response{Error: fmt.Sprintf("request body exceeds %d bytes", h.cfg.maxBody)})
			return
		}
		h.cfg.count(endpoint, OutcomeInvalid)
		writeJSON(w, http.StatusBadRequest, response{Error: fmt.Sprintf("reading request body: %v", err)})
		return
	}

	if auth != nil && len(auth.HMACSecret) > 0 {
		sig, expires, err := h.checkSignature(r.Header, body, auth)
		if err != nil {
			h.unauthorized(w, log, endpoint, err.Error())
			return
		}
		// The same signature means the same timestamp and body: a sender's
		// retry of a delivery it gave up on, or a replay. Either is answered
		// from the first delivery and never processed again, so no replay
		// queues an event twice. A retry that arrives while the first
		// delivery is still being queued waits for it, and goes through
		// when that one failed (5xx: the signature is forgotten).
		first, dup, err := h.replay.reserve(r.Context(), sig, h.cfg.now, func(time.Time) time.Time { return expires })
		switch {
		case err != nil:
			h.cfg.count(endpoint, OutcomeError)
			log.Warn("webhook request not answered", zap.String("outcome", OutcomeError), zap.Error(err))
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, response{Error: "waiting for an earlier delivery of the same signed request: " + err.Error()})
			return
		case dup:
			h.repeat(w, log, endpoint, first)
			return
		}
		var answer signedAnswer // status 0 until answered: a panic forgets the signature
		defer func() { h.replay.settle(sig, answer.status != 0 && answer.status < 500, answer) }()
		resp, status := h.handle(r.Context(), log, endpoint, r, body)
		answer = signedAnswer{endpoint: endpoint, resp: resp, status: status}
		h.answer(w, status, resp)
		return
	}
	resp, status := h.handle(r.Context(), log, endpoint, r, body)
	h.answer(w, status, resp)
}

// handle parses the body of an authenticated request and processes its
// events.
func (h *Handler) handle(ctx context.Context, log *zap.Logger, endpoint string, r *http.Request, body []byte) (response, int) {
	items, err := parseBody(endpoint, r.Header, body)
	if err != nil {
		h.cfg.count(endpoint, OutcomeInvalid)
		log.Warn("webhook refused", zap.String("outcome", OutcomeInvalid), zap.Error(err))
		return response{Error: oneLine(err.Error())}, http.StatusBadRequest
	}
	return h.process(ctx, log, endpoint, r, items)
}

func (h *Handler) answer(w http.ResponseWriter, status int, resp response) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, status, resp)
}

// submit is the sink's Submit with a panic made an error: the event's
// reservation must be settled (forgotten), or every later delivery of it
// would wait for a delivery that never ends.
func (h *Handler) submit(ctx context.Context, ev Event) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("queueing the event panicked: %v", p)
		}
	}()
	return h.sink.Submit(ctx, ev)
}

// signedAnswer is what the first delivery of a signed request answered.
type signedAnswer struct {
	endpoint string
	resp     response
	status   int
}

// repeat answers a signed request identical to an earlier one whose
// delivery was not a failure (a sender's retry after a timeout, or a
// replay) from that delivery's answer, without processing it: the events it
// queued are duplicates now. Sent to another endpoint, it is a replay.
func (h *Handler) repeat(w http.ResponseWriter, log *zap.Logger, endpoint string, first signedAnswer) {
	if first.endpoint != endpoint {
		h.unauthorized(w, log, endpoint, "signature already used (replay) on /webhooks/"+first.endpoint)
		return
	}
	resp := first.resp
	resp.Duplicates += resp.Accepted
	resp.Accepted = 0
	n := 0
	count := func(k int, outcome string) {
		for range k {
			h.cfg.count(endpoint, outcome)
		}
		n += k
	}
	count(resp.Duplicates, OutcomeDuplicate)
	count(resp.Ignored, OutcomeIgnored)
	count(resp.Invalid, OutcomeInvalid)
	count(resp.Refused, OutcomeRefused)
	if n == 0 {
		h.cfg.count(endpoint, OutcomeDuplicate) // the request itself
	}
	log.Info("webhook request repeats an earlier signed delivery; answered from it, nothing queued",
		zap.Int("status", first.status), zap.Int("duplicates", resp.Duplicates))
	writeJSON(w, first.status, resp)
}

func (h *Handler) unauthorized(w http.ResponseWriter, log *zap.Logger, endpoint, reason string) {
	h.cfg.count(endpoint, OutcomeUnauthorized)
	log.Warn("webhook refused", zap.String("outcome", OutcomeUnauthorized), zap.String("reason", reason))
	w.Header().Set("WWW-Authenticate", `Bearer realm="cimconv-webhooks"`)
	writeJSON(w, http.StatusUnauthorized, response{Error: "unauthorized: " + reason})
}

// process filters, validates and submits the parsed items of one request and
// returns the answer. A sink failure on any event makes the whole answer 503
// (the registry retries; events already accepted are deduped by id).
func (h *Handler) process(ctx context.Context, log *zap.Logger, endpoint string, r *http.Request, items []item) (response, int) {
	var resp response
	var firstErr, firstInvalid, firstRefused string
	fallbackRegistry := strings.ToLower(r.URL.Query().Get("registry"))
	for _, it := range items {
		ev := it.ev
		ev.Source = endpoint
		if ev.Registry == "" {
			ev.Registry = fallbackRegistry
		}
		ev.Registry = strings.ToLower(ev.Registry)
		if it.ignore == "" {
			it.ignore = h.ownArtifact(it)
		}
		l := log.With(eventFields(ev)...)
		if it.ignore != "" {
			resp.Ignored++
			h.cfg.count(endpoint, OutcomeIgnored)
			l.Debug("webhook event ignored", zap.String("reason", it.ignore))
			continue
		}
		if err := validateEvent(ev); err != nil {
			resp.Invalid++
			h.cfg.count(endpoint, OutcomeInvalid)
			l.Warn("webhook event invalid", zap.Error(err))
			if firstInvalid == "" {
				firstInvalid = err.Error()
			}
			continue
		}
		if reason := h.refuse(ev); reason != "" {
			resp.Refused++
			h.cfg.count(endpoint, OutcomeRefused)
			l.Warn("webhook event refused", zap.String("reason", reason))
			if firstRefused == "" {
				firstRefused = reason
			}
			continue
		}
		// Reserve the event id before submitting, so a registry retrying an
		// envelope (or two concurrent deliveries) queues each event once.
		// A retry that arrives while an earlier delivery of the same event
		// is still being queued waits for it: answering "duplicate" then
		// would lose the event if the earlier one fails (a registry that
		// times out a slow delivery retries at once).
		var err error
		key := ""
		if ev.ID != "" {
			key = endpoint + "\x00" + ev.Registry + "\x00" + ev.ID
			var dup bool
			_, dup, err = h.seen.reserve(ctx, key, h.cfg.now, func(t time.Time) time.Time { return t.Add(h.cfg.dedupeWindow) })
			if dup {
				resp.Duplicates++
				h.cfg.count(endpoint, OutcomeDuplicate)
				l.Debug("webhook event duplicate")
				continue
			}
			if err != nil {
				key = "" // nothing reserved, nothing to settle
				err = fmt.Errorf("waiting for an earlier delivery of the same event: %w", err)
			}
		}
		if err == nil {
			err = h.submit(ctx, ev)
		}
		if key != "" {
			h.seen.settle(key, err == nil || errors.Is(err, ErrDuplicate), struct{}{})
		}
		switch {
		case errors.Is(err, ErrDuplicate):
			resp.Duplicates++
			h.cfg.count(endpoint, OutcomeDuplicate)
			l.Debug("webhook event duplicate (sink)")
		case err != nil:
			resp.Failed++
			h.cfg.count(endpoint, OutcomeError)
			l.Error("webhook event not queued", zap.Error(err))
			if firstErr == "" {
				firstErr = fmt.Sprintf("queueing %s: %v", ev.Ref(), err)
			}
			continue
		default:
			resp.Accepted++
			h.cfg.count(endpoint, OutcomeAccepted)
			l.Info("webhook event accepted", zap.String("image", ev.Ref()))
		}
	}
	switch {
	case resp.Failed > 0:
		resp.Error = oneLine(firstErr)
		return resp, http.StatusServiceUnavailable
	case resp.Accepted+resp.Duplicates > 0:
		return resp, http.StatusOK
	case resp.Invalid > 0:
		resp.Error = oneLine(firstInvalid)
		return resp, http.StatusBadRequest
	case resp.Refused > 0:
		resp.Error = oneLine(firstRefused)
		return resp, http.StatusForbidden
	}
	return resp, http.StatusOK
}

// ownArtifact returns why an item is one of our artifacts (or any artifact
// with a subject), or "" when it may be an image to convert.
func (h *Handler) ownArtifact(it item) string {
	switch {
	case it.ev.ArtifactType == h.cfg.ownType:
		return "own artifact (artifactType " + h.cfg.ownType + ")"
	case it.configMediaType == h.cfg.ownType:
		return "own artifact (config media type " + h.cfg.ownType + ")"
	case slices.Contains(it.refTypes, h.cfg.ownType):
		return "own artifact (references a " + h.cfg.ownType + " descriptor)"
	case it.ev.SubjectDigest != "":
		return "manifest has a subject (" + it.ev.SubjectDigest + "): an artifact, not an image"
	case fallbackTag.MatchString(it.ev.Tag):
		return "tag " + it.ev.Tag + " is a referrers fallback tag (an index of artifacts, e.g. cimconv's own push), not an image"
	}
	return ""
}

// fallbackTag is the OCI 1.1 referrers tag schema (<alg>-<hex>): registries
// without the referrers API keep an index of a subject's artifacts under it.
// cimconv pushes one with every artifact there; its event is not work.
var fallbackTag = regexp.MustCompile(`^sha256-[0-9a-f]{64}$|^sha512-[0-9a-f]{128}$`)

func eventFields(e Event) []zap.Field {
	f := []zap.Field{zap.String("registry", e.Registry), zap.String("repository", e.Repository)}
	if e.Digest != "" {
		f = append(f, zap.String("digest", e.Digest))
	}
	if e.Tag != "" {
		f = append(f, zap.String("tag", e.Tag))
	}
	if e.ID != "" {
		f = append(f, zap.String("event_id", e.ID))
	}
	return f
}

func writeJSON(w http.ResponseWriter, status int, v response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// expirySet remembers keys, each with a value, until their expiry,
// optionally bounded in size (oldest insertion evicted first). Its operations
// are atomic, so two concurrent requests cannot both reserve the same key.
type expirySet[V any] struct {
	mu    sync.Mutex
	m     map[string]expiryValue[V]
	order []expiryEntry // insertion order; entries superseded in m are skipped
	max   int
	// pending: keys reserved by a delivery still being queued (reserve).
	pending map[string]chan struct{}
}

type expiryValue[V any] struct {
	exp time.Time
	v   V
}

type expiryEntry struct {
	key string
	exp time.Time
}

func newExpirySet[V any](max int) *expirySet[V] {
	return &expirySet[V]{m: map[string]expiryValue[V]{}, max: max}
}

// addLocked inserts k with expiry exp (and a zero value) unless a live entry
// exists; it reports whether it inserted.
func (s *expirySet[V]) addLocked(k string, now, exp time.Time) bool {
	if old, ok := s.m[k]; ok && now.Before(old.exp) {
		return false
	}
	s.m[k] = expiryValue[V]{exp: exp}
	s.order = append(s.order, expiryEntry{k, exp})
	// Drop expired entries from the front, and the oldest beyond the bound.
	for len(s.order) > 0 {
		f := s.order[0]
		cur, ok := s.m[f.key]
		switch {
		case !ok || !cur.exp.Equal(f.exp):
			// Removed or re-added since: only the queue entry goes.
		case s.max > 0 && len(s.m) > s.max, !now.Before(f.exp):
			delete(s.m, f.key)
		default:
			return true
		}
		s.order = s.order[1:]
	}
	return true
}

// reserve reserves k, until expiry(now), for one delivery (dup false)
// unless a live entry says an earlier delivery settled it (dup true, with
// the value that one settled). While another delivery of k is still pending
// it waits for that one to settle, or for ctx to end (err is ctx's).
func (s *expirySet[V]) reserve(ctx context.Context, k string, now func() time.Time, expiry func(now time.Time) time.Time) (prior V, dup bool, err error) {
	for {
		s.mu.Lock()
		if wait, ok := s.pending[k]; ok {
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return prior, false, ctx.Err()
			}
		}
		t := now()
		if !s.addLocked(k, t, expiry(t)) {
			prior = s.m[k].v
			s.mu.Unlock()
			return prior, true, nil
		}
		if s.pending == nil {
			s.pending = map[string]chan struct{}{}
		}
		s.pending[k] = make(chan struct{})
		s.mu.Unlock()
		return prior, false, nil
	}
}

// settle ends the pending delivery of k: kept with v when keep (the
// deliveries waiting for it, and later ones, get v as dup), forgotten
// otherwise (so the next delivery goes through).
func (s *expirySet[V]) settle(k string, keep bool, v V) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.pending[k]; ok {
		close(ch)
		delete(s.pending, k)
	}
	if !keep {
		delete(s.m, k)
		return
	}
	if e, ok := s.m[k]; ok {
		e.v = v
		s.m[k] = e
	}
}

func (s *expirySet[V]) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
