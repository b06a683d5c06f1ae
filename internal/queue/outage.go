package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// DefaultOutageTolerance is how long one queue operation (a claim, a status
// write, a dead letter) keeps retrying while the JetStream cluster cannot
// answer: a stream leader election after a node dies takes 2-20 s, a client
// reconnect a few seconds more. Without it a conversion that meets an
// election fails at once, and a handful of elections use up every delivery
// of a request (seen: a 3-node cluster with its leader, then a follower,
// SIGKILLed dead-lettered a request with "nats: no response from stream").
const DefaultOutageTolerance = 2 * time.Minute

// attemptTimeout bounds one try of an operation, so that a request lost in a
// reconnect is retried instead of waited for.
const attemptTimeout = 5 * time.Second

// WithOutageTolerance sets how long one operation retries while the cluster
// is unavailable (default DefaultOutageTolerance; 0 fails at once).
func WithOutageTolerance(d time.Duration) Option { return func(c *config) { c.outage = d } }

// unavailable reports whether err says the JetStream cluster could not
// answer for now (no stream leader, no responders, a reconnect, a timeout),
// as opposed to an answer (a conflict, a missing key) or a closed client.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, jetstream.ErrServerShutdown) || errors.Is(err, nats.ErrNoStreamResponse) {
		return true
	}
	// The jetstream package's API errors, and the legacy nats package's
	// (KV watchers are push subscriptions made through it).
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return unavailableCode(apiErr.Code, int(apiErr.ErrorCode))
	}
	var legacy *nats.APIError
	if errors.As(err, &legacy) {
		return unavailableCode(legacy.Code, int(legacy.ErrorCode))
	}
	return false
}

// unavailableCode: the server answered that it cannot serve the request for
// now (HTTP-style 503, or a stream without a leader).
func unavailableCode(code, errCode int) bool {
	switch errCode {
	case 10008, // JSClusterNotAvailErr: JetStream system temporarily unavailable
		10118, // JSStreamOfflineErr
		10163: // JSStreamExpectedLastSeqPerSubjectNotReady (just after a leader change)
		return true
	}
	return code == 503
}

// rider retries operations through a cluster outage.
type rider struct {
	bound time.Duration
	log   *zap.Logger
}

// do runs op until it succeeds, fails with an answer, ctx ends or the outage
// outlasts the bound. Each try gets its own deadline (attemptTimeout); a try
// that ran out of it while ctx lives counts as unavailable. What does not
// succeed within the bound is marked errdefs.ErrUnavailable.
//
// Retried operations must be safe to repeat: a write whose answer was lost
// may have landed, so callers use idempotent writes (message ids, revision
// checks they re-read on conflict, puts).
func (r rider) do(ctx context.Context, what string, op func(context.Context) error) error {
	var (
		start  time.Time
		wait   = 100 * time.Millisecond
		warned bool
	)
	for {
		tctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(tctx)
		timedOut := errors.Is(err, context.DeadlineExceeded) && tctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			if warned {
				r.log.Info("NATS answers again", zap.String("op", what), zap.Duration("after", time.Since(start).Round(time.Millisecond)))
			}
			return nil
		}
		if !timedOut && !unavailable(err) {
			return err
		}
		if start.IsZero() {
			start = time.Now()
		}
		if ctx.Err() != nil || time.Since(start)+wait > r.bound {
			if r.bound > 0 {
				return errdefs.Unavailable(fmt.Errorf("%w (NATS unavailable for %v)", err, time.Since(start).Round(time.Second)))
			}
			return errdefs.Unavailable(err)
		}
		if !warned {
			warned = true
			r.log.Warn("NATS cannot answer (leader election or reconnect?); retrying",
				zap.String("op", what), zap.Error(err), zap.Duration("upTo", r.bound))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errdefs.Unavailable(fmt.Errorf("%w (then: %w)", err, ctx.Err()))
		case <-t.C:
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// ridingKV is a bucket whose reads and writes ride through outages. Each
// write it retries is one a caller already handles when it lands twice:
// Create answers "exists" (the claim and status code re-read), Update
// answers a revision conflict (re-read), Put and Delete are idempotent.
type ridingKV struct {
	jetstream.KeyValue
	r rider
}

func (k *ridingKV) Get(ctx context.Context, key string) (e jetstream.KeyValueEntry, err error) {
	err = k.r.do(ctx, "get "+k.Bucket()+" "+key, func(ctx context.Context) error {
		e, err = k.KeyValue.Get(ctx, key)
		return err
	})
	return e, err
}

func (k *ridingKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (rev uint64, err error) {
	err = k.r.do(ctx, "create "+k.Bucket()+" "+key, func(ctx context.Context) error {
		rev, err = k.KeyValue.Create(ctx, key, value, opts...)
		return err
	})
	return rev, err
}

func (k *ridingKV) Update(ctx context.Context, key string, value []byte, last uint64) (rev uint64, err error) {
	err = k.r.do(ctx, "update "+k.Bucket()+" "+key, func(ctx context.Context) error {
		rev, err = k.KeyValue.Update(ctx, key, value, last)
		return err
	})
	return rev, err
}

func (k *ridingKV) Put(ctx context.Context, key string, value []byte) (rev uint64, err error) {
	err = k.r.do(ctx, "put "+k.Bucket()+" "+key, func(ctx context.Context) error {
		rev, err = k.KeyValue.Put(ctx, key, value)
		return err
	})
	return rev, err
}

func (k *ridingKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	return k.r.do(ctx, "delete "+k.Bucket()+" "+key, func(ctx context.Context) error {
		return k.KeyValue.Delete(ctx, key, opts...)
	})
}

func (k *ridingKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (w jetstream.KeyWatcher, err error) {
	// Not bounded per try: the watcher lives on ctx.
	err = k.r.do(ctx, "watch "+k.Bucket()+" "+keys, func(context.Context) error {
		w, err = k.KeyValue.Watch(ctx, keys, opts...)
		return err
	})
	return w, err
}
