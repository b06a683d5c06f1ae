package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A registry failing every 3rd request with 503 still serves a whole
// resolve / stream / push / referrers round.
func TestFlakyRegistry(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		// The fixture is pushed while the registry is healthy; then it turns flaky.
		var flaky atomic.Bool
		var failed atomic.Int64
		var n atomic.Int64
		mw := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if flaky.Load() && n.Add(1)%3 == 0 {
					failed.Add(1)
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				next.ServeHTTP(w, req)
			})
		}
		f := newFixture(t, r, registrytest.WithMiddleware(mw))
		flaky.Store(true)
		c, sleeps := newTestClient(t)
		ctx := context.Background()
		targets, err := c.Resolve(ctx, f.repo+":multi", v1.Platform{}, OSVersionPolicy{})
		if err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		for _, tg := range targets {
			for _, l := range tg.Layers {
				rc, err := c.OpenLayer(ctx, tg, l)
				if err != nil {
					t.Fatalf("OpenLayer: %v", err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					t.Fatalf("reading layer: %v", err)
				}
				rc.Close()
			}
		}
		repo := mustRepo(t, f.repo)
		a := newArtifact(t, testArtifactType, targets[0].Descriptor, "flaky")
		if _, err := a.push(ctx, c, repo, targets[0].Descriptor); err != nil {
			t.Fatalf("push: %v", err)
		}
		got, err := c.Referrers(ctx, targets[0].Ref, testArtifactType)
		if err != nil || len(got) != 1 {
			t.Fatalf("Referrers = %v, %v", got, err)
		}
		if failed.Load() == 0 || int64(len(sleeps.all())) < failed.Load() {
			t.Fatalf("%d injected failures, %d retries", failed.Load(), len(sleeps.all()))
		}
	})
}

// registrytest.WithFailEvery itself (used by other packages' tests) works
// with the client, including the first ping.
func TestWithFailEvery(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		counter := newRequestCounter()
		host := r.start(t, registrytest.WithFailEvery(3), registrytestRequestLog(counter))
		c, _ := newTestClient(t)
		ctx := context.Background()
		repo := mustRepo(t, host+"/flaky/blobs")
		for i := range 4 {
			b := []byte(fmt.Sprintf("blob %d", i))
			d, n, _ := v1.SHA256(strings.NewReader(string(b)))
			desc := v1.Descriptor{Digest: d, Size: n}
			if err := c.PushBlob(ctx, repo, desc, func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(b))), nil }); err != nil {
				t.Fatalf("PushBlob %d: %v", i, err)
			}
			rc, err := c.FetchBlob(ctx, repo, desc)
			if err != nil {
				t.Fatalf("FetchBlob %d: %v", i, err)
			}
			got, err := io.ReadAll(rc)
			if err != nil || string(got) != string(b) {
				t.Fatalf("FetchBlob %d = %q, %v", i, got, err)
			}
		}
	})
}

// throttle answers 429 with Retry-After to the first `times` requests whose
// path contains match, once armed.
func throttle(armed *atomic.Bool, match string, times int64, retryAfter string) (func(http.Handler) http.Handler, *atomic.Int64) {
	var hits atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if armed.Load() && strings.Contains(r.URL.Path, match) && hits.Add(1) <= times {
				w.Header().Set("Retry-After", retryAfter)
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			next.ServeHTTP(w, r)
		})
	}, &hits
}

func TestRetryAfterHonoured(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		var armed atomic.Bool
		mw, hits := throttle(&armed, "/manifests/10.0.20348.2031", 2, "7")
		f := newFixture(t, r, registrytest.WithMiddleware(mw))
		armed.Store(true)
		c, sleeps := newTestClient(t)
		ctx := context.Background()
		if _, err := c.Resolve(ctx, f.repo+":10.0.20348.2031", v1.Platform{}, OSVersionPolicy{}); err != nil {
			t.Fatalf("Resolve through two 429s: %v", err)
		}
		if got := hits.Load(); got != 3 {
			t.Fatalf("manifest requested %d times, want 3 (two 429s, one success)", got)
		}
		var sevens int
		for _, d := range sleeps.all() {
			if d == 7*time.Second {
				sevens++
			}
		}
		if sevens != 2 {
			t.Fatalf("sleeps %v: want two of Retry-After 7s", sleeps.all())
		}

		// With fewer attempts than 429s, the error is transient.
		hits.Store(0)
		c2, _ := newTestClient(t, WithRetry(RetryPolicy{MaxAttempts: 2}))
		_, err := c2.Resolve(ctx, f.repo+":10.0.20348.2031", v1.Platform{}, OSVersionPolicy{})
		if err == nil || !errdefs.IsUnavailable(err) {
			t.Fatalf("Resolve after exhausting retries = %v, want a transient error", err)
		}
		if got := hits.Load(); got != 2 {
			t.Fatalf("manifest requested %d times with MaxAttempts 2", got)
		}
	})
}

func TestRetryAfterCapped(t *testing.T) {
	rt := &retryTransport{policy: RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond, MaxDelay: time.Second, MaxRetryAfter: 30 * time.Second}}
	var calls int
	rt.inner = roundTripFunc(func(*http.Request) (*http.Response, error) {
		calls++
		if calls == 1 {
			return &http.Response{StatusCode: 429, Header: http.Header{"Retry-After": {"3600"}}, Body: http.NoBody}, nil
		}
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	var slept []time.Duration
	rt.sleep = func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }
	rt.now = time.Now
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/v2/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 || len(slept) != 1 || slept[0] != 30*time.Second {
		t.Fatalf("resp %v err %v slept %v; want one 30s (capped) sleep", resp, err, slept)
	}
}

func TestRetryTransportDoesNotReplayStreams(t *testing.T) {
	var calls int
	rt := &retryTransport{
		inner: roundTripFunc(func(*http.Request) (*http.Response, error) {
			calls++
			return &http.Response{StatusCode: 503, Body: http.NoBody}, nil
		}),
		policy: DefaultRetryPolicy,
		sleep:  func(context.Context, time.Duration) error { return nil },
		now:    time.Now,
	}
	req, _ := http.NewRequest(http.MethodPut, "http://127.0.0.1/v2/x", io.NopCloser(strings.NewReader("body")))
	req.GetBody = nil
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 503 || calls != 1 {
		t.Fatalf("unreplayable body: %d calls, resp %v, err %v", calls, resp, err)
	}
	calls = 0
	req, _ = http.NewRequest(http.MethodPut, "http://127.0.0.1/v2/x", strings.NewReader("body"))
	if _, err := rt.RoundTrip(req); err != nil || calls != DefaultRetryPolicy.MaxAttempts {
		t.Fatalf("replayable body: %d calls, err %v", calls, err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "7", "-1", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, ok := parseRetryAfter(s, time.Now()); ok && d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %v", s, d)
		}
	})
}

func TestBackoffBounds(t *testing.T) {
	p := RetryPolicy{InitialDelay: 100 * time.Millisecond, MaxDelay: time.Second}.withDefaults()
	for n := 1; n < 10; n++ {
		full := min(p.InitialDelay<<(n-1), p.MaxDelay)
		for range 20 {
			d := p.backoff(n)
			if d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, full/2, full)
			}
		}
	}
}

func TestIsTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"digest mismatch", wrapErr("x", "r", ErrDigestMismatch), false},
		{"not found", wrapErr("x", "r", ErrNotFound), false},
		{"canceled", wrapErr("x", "r", context.Canceled), false},
		{"deadline", wrapErr("x", "r", context.DeadlineExceeded), true},
		{"unexpected EOF", wrapErr("x", "r", io.ErrUnexpectedEOF), true},
		{"503 status", wrapErr("x", "r", &statusError{code: 503}), true},
		{"404 status", wrapErr("x", "r", &statusError{code: 404}), false},
		{"wrapped Error", fmt.Errorf("outer: %w", &Error{Op: "x", Transient: true, Err: errors.New("boom")}), true},
		{"plain error", errors.New("boom"), false},
	}
	for _, tt := range tests {
		if got := errdefs.IsUnavailable(tt.err); got != tt.want {
			t.Errorf("%s: errdefs.IsUnavailable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
