package convert

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// fromShared consults the shared cache for j: another worker's layer is
// adopted; otherwise this worker claims the layer (j.claim) and builds it.
func (c *Converter) fromShared(ctx context.Context, j *layerJob, parentBlob string) (CacheEntry, *Blob, bool, error) {
	key := c.chainKey(j.src.ChainID)
	val, won, err := c.shared.Acquire(ctx, key)
	if err != nil {
		return CacheEntry{}, nil, false, fmt.Errorf("shared chain cache %s: %w", j.src.ChainID, err)
	}
	if won {
		j.claimMu.Lock()
		j.claim = key
		j.claimMu.Unlock()
		return CacheEntry{}, nil, false, nil
	}
	e, b, ok, err := c.adoptShared(ctx, val, j.src.ChainID, parentBlob)
	if errors.Is(err, errStaleValue) {
		// Failing here would fail every image on this chain, on every
		// worker without the layer in its local cache, for good: nothing
		// else replaces the value.
		c.log.Warn("shared chain cache names a blob that is gone; building the layer to replace it",
			zap.String("chainID", j.src.ChainID), zap.Error(err))
		j.stale = key
		return CacheEntry{}, nil, false, nil
	}
	return e, b, ok, err
}

// releaseClaims gives up the claims of layers whose value was not stored.
func (c *Converter) releaseClaims(jobs []*layerJob) {
	for _, j := range jobs {
		if key := j.claimKey(); key != "" {
			_ = c.shared.Release(context.WithoutCancel(context.Background()), key)
			j.claimMu.Lock()
			j.claim = ""
			j.claimMu.Unlock()
		}
	}
}

func (j *layerJob) claimKey() string {
	j.claimMu.Lock()
	defer j.claimMu.Unlock()
	return j.claim
}

type layerKey struct{}

type layerRef struct{ n, of int }

// WithLayer tells SharedCache calls which layer of the image they are about.
func WithLayer(ctx context.Context, n, of int) context.Context {
	return context.WithValue(ctx, layerKey{}, layerRef{n, of})
}

// LayerOf returns the 1-based index and the layer count of the layer a
// SharedCache call is about (for "waiting for layer N/M" messages).
func LayerOf(ctx context.Context) (n, of int, ok bool) {
	l, ok := ctx.Value(layerKey{}).(layerRef)
	return l.n, l.of, ok
}

// safely runs f on a conversion goroutine: a panic becomes f's error, so no
// goroutine of a conversion can crash the process.
func safely(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s panicked: %v", what, r)
		}
	}()
	return f()
}

// claimRenewInterval is how often held claims are renewed during a build
// (the service's claims renew themselves much more often and die with
// their holder; this only reports a lost claim).
const claimRenewInterval = 5 * time.Minute

// renewClaims keeps the claims of jobs alive until ctx ends.
func (c *Converter) renewClaims(ctx context.Context, jobs []*layerJob, every time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("claim renewal panicked", zap.Any("panic", r))
		}
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, j := range jobs {
			key := j.claimKey()
			if key == "" {
				continue
			}
			if ok, err := c.shared.Renew(ctx, key); err != nil || !ok {
				c.log.Warn("could not renew a build claim; another worker may build this layer too",
					zap.String("chainID", j.src.ChainID), zap.Bool("held", ok), zap.Error(err))
			}
		}
	}
}
