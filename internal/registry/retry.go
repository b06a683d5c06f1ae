package registry

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// RetryPolicy says how often and how patiently a request is retried on 408,
// 429, 5xx, timeouts and connection resets. The zero value means the
// defaults (DefaultRetryPolicy).
type RetryPolicy struct {
	// MaxAttempts counts the first try; 1 disables retries.
	MaxAttempts int
	// InitialDelay is the backoff before the second attempt; it doubles per
	// attempt up to MaxDelay, with full jitter in [d/2, d].
	InitialDelay time.Duration
	MaxDelay     time.Duration
	// MaxRetryAfter caps a server's Retry-After (a registry asking for an hour
	// should fail the operation, not park a worker).
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy: 5 attempts, 200ms doubling to 10s, Retry-After honoured
// up to 60s.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 5, InitialDelay: 200 * time.Millisecond, MaxDelay: 10 * time.Second, MaxRetryAfter: 60 * time.Second}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy
	if p.MaxAttempts > 0 {
		d.MaxAttempts = p.MaxAttempts
	}
	if p.InitialDelay > 0 {
		d.InitialDelay = p.InitialDelay
	}
	if p.MaxDelay > 0 {
		d.MaxDelay = p.MaxDelay
	}
	if p.MaxRetryAfter > 0 {
		d.MaxRetryAfter = p.MaxRetryAfter
	}
	return d
}

// backoff is the delay before attempt n+1 (n >= 1), jittered.
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.InitialDelay
	for i := 1; i < n && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleepFunc waits d or until ctx is done; tests replace it to observe delays
// without waiting.
type sleepFunc func(ctx context.Context, d time.Duration) error

// retryTransport sits under authentication (so token requests are retried
// too) and re-sends a request when it can rebuild the body (GetBody).
// Failures while reading a response body are not retried here: the
// operation's caller sees a transient *Error.
type retryTransport struct {
	inner  http.RoundTripper
	policy RetryPolicy
	sleep  sleepFunc
	now    func() time.Time
	log    *zap.Logger // nil: no logging
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	canReplay := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 1; ; attempt++ {
		r := req
		if attempt > 1 && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r = req.Clone(ctx)
			r.Body = body
		}
		resp, err := t.inner.RoundTrip(r)
		last := attempt >= t.policy.MaxAttempts || !canReplay
		var wait time.Duration
		switch {
		case err != nil:
			if last || ctx.Err() != nil || !classifyTransient(err) || errors.Is(err, ErrInsecureRefused) || errors.Is(err, ErrDialRefused) {
				return nil, err
			}
			wait = t.policy.backoff(attempt)
		case retryableStatus(resp.StatusCode):
			if last {
				return resp, nil
			}
			wait = t.policy.backoff(attempt)
			if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), t.now()); ok {
				wait = min(ra, t.policy.MaxRetryAfter)
			}
			// Drain a little so the connection can be reused.
			_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
			resp.Body.Close()
		default:
			return resp, nil
		}
		if t.log != nil {
			fields := []zap.Field{zap.String("method", req.Method), zap.String("url", redactURL(req.URL)), zap.Int("attempt", attempt), zap.Duration("wait", wait)}
			if err != nil {
				fields = append(fields, zap.Error(err))
			} else {
				fields = append(fields, zap.Int("status", resp.StatusCode))
			}
			t.log.Debug("registry request failed, retrying", fields...)
		}
		if err := t.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// parseRetryAfter reads delay-seconds or an HTTP-date (RFC 9110 10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0, false
		}
		s = min(s, 1<<20) // ~12 days; avoids Duration overflow, capped later anyway
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}
