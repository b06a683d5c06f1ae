package convert

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// fromShared consults the shared cache for j: another worker's layer is
// adopted; otherwise this worker claims the layer (j.claim) and builds it.
func (c *Converter) fromShared(ctx context.Context, j *layerJob, parentBlob string) (CacheEntry, bool, error) {
	key := sharedKey(c.b.Capabilities().Name, j.src.ChainID)
	val, won, err := c.shared.Acquire(ctx, key)
	if err != nil {
		return CacheEntry{}, false, fmt.Errorf("shared chain cache %s: %w", j.src.ChainID, err)
	}
	if won {
		j.claimMu.Lock()
		j.claim = key
		j.claimMu.Unlock()
		return CacheEntry{}, false, nil
	}
	return c.adoptShared(ctx, val, j.src.ChainID, parentBlob)
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

// claimRenewInterval is how often held claims are renewed during a build;
// claims must live several times longer (the service uses 30 minutes).
const claimRenewInterval = 5 * time.Minute

// renewClaims keeps the claims of jobs alive until ctx ends.
func (c *Converter) renewClaims(ctx context.Context, jobs []*layerJob, every time.Duration) {
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
