package convert

import (
	"context"
)

// reuse looks for j's layer built on parentBlob: in the local cache, after
// waiting for a conversion of this process that is building it, then in the
// shared cache. It sets j.entry and j.blob when found. When it is not found,
// j holds the in-process claim on building the layer (j.release), and the
// shared cache's claim when there is one.
func (c *Converter) reuse(ctx context.Context, j *layerJob, parentBlob string) (bool, error) {
	key := sharedKey(c.b.Capabilities().Name, j.src.ChainID)
	for {
		if ok, err := c.fromCache(j, parentBlob); err != nil || ok {
			return ok, err
		}
		release, wait, won := c.flights.claim(key)
		if won {
			j.release = release
			break
		}
		select {
		case <-wait: // built (or given up): look again
		case <-ctx.Done():
			return false, context.Cause(ctx)
		}
	}
	// Cached between the look and the claim?
	if ok, err := c.fromCache(j, parentBlob); err != nil || ok {
		j.release()
		return ok, err
	}
	if c.shared == nil {
		return false, nil
	}
	e, b, ok, err := c.fromShared(ctx, j, parentBlob)
	if ok {
		j.entry, j.blob = e, b
		j.release()
	}
	return ok, err
}

// fromCache takes j's layer from the local cache. A layer is reused only
// from the same builder: forked CIMs of one builder cannot sit on parents
// written by another.
func (c *Converter) fromCache(j *layerJob, parentBlob string) (bool, error) {
	e, b, ok, err := c.cache.Get(j.src.ChainID, parentBlob)
	if err != nil || !ok {
		return false, err
	}
	if e.Build.Builder != c.b.Capabilities().Name {
		b.Close()
		return false, nil
	}
	j.entry, j.blob = e, b
	return true, nil
}

// claimRest claims, without waiting, the layers built after the first one
// that was not reused, so that another conversion of this process sharing
// them waits for these builds instead of repeating them. A layer another
// conversion holds already is built anyway (its parent is this conversion's
// own build, which that one cannot reuse).
func (c *Converter) claimRest(jobs []*layerJob) {
	for _, j := range jobs {
		if release, _, won := c.flights.claim(sharedKey(c.b.Capabilities().Name, j.src.ChainID)); won {
			j.release = release
		}
	}
}
