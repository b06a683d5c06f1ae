package registrytest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory" // the "inmemory" storage driver
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/sirupsen/logrus"
)

type options struct {
	failEvery     int
	notifyURL     string
	notifyHeaders http.Header
	requestLog    func(*http.Request)
	wrap          []func(http.Handler) http.Handler
}

// Opt configures a test registry.
type Opt func(*options)

// WithFailEvery makes every n-th request (counting all requests the server
// receives) fail with 503 and a registry error body, before the registry
// sees it: a flaky registry or proxy.
func WithFailEvery(n int) Opt { return func(o *options) { o.failEvery = n } }

// WithNotifications makes distribution send its real notifications (one
// POST per batch of events, application/vnd.docker.distribution.events.v1+json)
// to endpointURL with headers. Distribution only; the ggcr registry ignores it.
func WithNotifications(endpointURL string, headers http.Header) Opt {
	return func(o *options) { o.notifyURL, o.notifyHeaders = endpointURL, headers }
}

// WithRequestLog calls f with every request the server receives (including
// the ones WithFailEvery fails), before it is handled. f must be safe for
// concurrent use.
func WithRequestLog(f func(*http.Request)) Opt { return func(o *options) { o.requestLog = f } }

// WithMiddleware wraps the registry handler (outermost last), e.g. to
// corrupt blobs or answer 429.
func WithMiddleware(mw func(http.Handler) http.Handler) Opt {
	return func(o *options) { o.wrap = append(o.wrap, mw) }
}

// WithBasicAuth requires HTTP basic credentials user:password on every
// request (401 with a Basic challenge otherwise), as a private registry
// behind a pull secret would. Push fixtures before arming it, or push with
// credentials: PushImage and friends push anonymously.
func WithBasicAuth(user, password string, armed func() bool) Opt {
	return WithMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if armed != nil && !armed() {
				next.ServeHTTP(w, r)
				return
			}
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="registrytest"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
}

// NewReferrersRegistry starts go-containerregistry's in-memory registry with
// the OCI 1.1 referrers API on 127.0.0.1 and returns "127.0.0.1:port". It
// is closed when the test ends.
func NewReferrersRegistry(t testing.TB, opts ...Opt) string {
	t.Helper()
	o := apply(opts)
	h := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	return serve(t, o, h)
}

var quietLogrus sync.Once

// NewDistribution starts CNCF distribution v3 (inmemory storage, no referrers
// API) on 127.0.0.1 and returns "127.0.0.1:port". Its logrus output is
// discarded (process-wide: distribution logs through the standard logger).
func NewDistribution(t testing.TB, opts ...Opt) string {
	t.Helper()
	quietLogrus.Do(func() {
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.PanicLevel)
	})
	o := apply(opts)
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"inmemory": configuration.Parameters{},
			"delete":   configuration.Parameters{"enabled": true},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{
				"enabled": false,
			}},
		},
	}
	cfg.Log.Level = "panic"
	cfg.Log.AccessLog.Disabled = true
	cfg.HTTP.Secret = "registrytest"
	// Distribution refuses every foreign-layer URL unless an allow rule is
	// configured; accept http(s) so PushForeignLayerImage works.
	cfg.Validation.Manifests.URLs.Allow = []string{"^https?://"}
	if o.notifyURL != "" {
		cfg.Notifications.Endpoints = []configuration.Endpoint{{
			Name:    "registrytest",
			URL:     o.notifyURL,
			Headers: o.notifyHeaders,
		}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	app := handlers.NewApp(ctx, cfg)
	return serve(t, o, app)
}

func apply(opts []Opt) *options {
	o := &options{}
	for _, f := range opts {
		f(o)
	}
	return o
}

func serve(t testing.TB, o *options, h http.Handler) string {
	t.Helper()
	for _, mw := range o.wrap {
		h = mw(h)
	}
	if o.failEvery > 0 {
		h = failEvery(o.failEvery, h)
	}
	if o.requestLog != nil {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			o.requestLog(r)
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h) // listens on 127.0.0.1:0
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func failEvery(n int, next http.Handler) http.Handler {
	var count atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if count.Add(1)%int64(n) == 0 {
			if r.Body != nil {
				_, _ = io.Copy(io.Discard, r.Body)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"errors":[{"code":"UNAVAILABLE","message":"registrytest: injected failure"}]}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}
