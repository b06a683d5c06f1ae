package convert

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/readcount"
	"github.com/cimconv/cimconv/internal/registry"
)

// buildChain builds or reuses every layer, in order. Packing and caching of a
// built layer overlap with building the next one. The first failure cancels
// the rest and is the error returned (context.Cause): a pack failure is not
// reported as the cancellation of the build it stopped.
func (c *Converter) buildChain(ctx context.Context, t registry.Target, jobs []*layerJob, chainDir string, log *zap.Logger) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	// fail records err as the cause unless something failed first, and
	// returns the first cause (the parent's, when it was cancelled).
	fail := func(err error) error {
		cancel(err)
		return context.Cause(ctx)
	}

	// The cached prefix of the chain: reused, not built.
	parentBlob := ""
	firstBuilt := len(jobs)
	for i, j := range jobs {
		ok, err := c.reuse(WithLayer(ctx, i+1, len(jobs)), j, parentBlob)
		if err != nil {
			return fail(err)
		}
		if !ok {
			firstBuilt = i
			break
		}
		j.cached = true
		close(j.packed)
		parentBlob = j.entry.Blob.Digest
		c.obs.Layer(true)
		c.emit(Event{Subject: t.Ref.String(), Stage: StageBuild, Layer: i + 1, Layers: len(jobs), ChainID: j.src.ChainID, Cached: true, Done: true})
	}
	c.claimRest(jobs[min(firstBuilt+1, len(jobs)):])
	for i := firstBuilt; i < len(jobs); i++ {
		jobs[i].src.Open = c.opener(t, i, len(jobs))
	}
	// A two-phase builder prepares every remaining layer's data at once;
	// only the metadata is done below, in chain order.
	ahead := c.prepareAhead(ctx, jobs, firstBuilt, chainDir)
	defer func() {
		cancel(nil) // stop Prepares still running after a failure
		ahead.discard()
	}()

	for i := firstBuilt; i < len(jobs); i++ {
		j := jobs[i]
		// The parent chain must be on disk in chainDir.
		var parent *builder.BuiltLayer
		if i > 0 {
			var err error
			if parent, err = c.materialize(jobs[:i], chainDir); err != nil {
				return fail(err)
			}
		}
		start := time.Now()
		built, err := ahead.build(ctx, c.b, i, j, parent, chainDir)
		c.obs.Stage(StageBuild, time.Since(start), err)
		if err != nil {
			return fail(fmt.Errorf("layer %d/%d (%s): %w", i+1, len(jobs), j.src.Digest, err))
		}
		if built.UnmergedDeltas {
			return fail(ErrUnmerged)
		}
		j.built = built
		c.obs.Layer(false)
		log.Debug("layer built", zap.String("chainID", j.src.ChainID), zap.String("cim", built.CimName))
		var prev *layerJob
		if i > 0 {
			prev = jobs[i-1]
		}
		wg.Add(1)
		go func(i int, j, prev *layerJob) {
			defer wg.Done()
			defer close(j.packed)
			if err := safely("pack", func() error { return c.pack(ctx, j, prev) }); err != nil {
				j.packErr = fmt.Errorf("layer %d/%d: pack: %w", i+1, len(jobs), err)
				cancel(j.packErr)
			}
			if j.release != nil {
				j.release() // cached (or failed): conversions waiting for it go on
			}
		}(i, j, prev)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// prepareConcurrency bounds concurrent Prepare calls: each keeps about one
// core busy (decompression runs beside parsing and writing).
const prepareConcurrency = 2

// preparing holds the layers a two-phase builder prepares ahead.
type preparing struct {
	tp      builder.TwoPhase
	results []chan prepResult // by layer index; nil when not prepared ahead
	wg      sync.WaitGroup
	mu      sync.Mutex
	got     []builder.Prepared // everything Prepare returned, for discard
}

type prepResult struct {
	p   builder.Prepared
	err error
}

// prepareAhead starts Prepare for jobs[from:] when the builder supports it
// and more than one layer is to be built; otherwise layers are built one by
// one with BuildLayer.
func (c *Converter) prepareAhead(ctx context.Context, jobs []*layerJob, from int, chainDir string) *preparing {
	pa := &preparing{}
	tp, ok := c.b.(builder.TwoPhase)
	if !ok || len(jobs)-from < 2 {
		return pa
	}
	pa.tp = tp
	pa.results = make([]chan prepResult, len(jobs))
	sem := make(chan struct{}, prepareConcurrency)
	for i := from; i < len(jobs); i++ {
		pa.results[i] = make(chan prepResult, 1)
		pa.wg.Add(1)
		go func(i int) {
			defer pa.wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				pa.results[i] <- prepResult{err: ctx.Err()}
				return
			}
			defer func() { <-sem }()
			var p builder.Prepared
			err := safely("prepare", func() (err error) { p, err = tp.Prepare(ctx, jobs[i].src, i, chainDir); return err })
			if p != nil {
				pa.mu.Lock()
				pa.got = append(pa.got, p)
				pa.mu.Unlock()
			}
			pa.results[i] <- prepResult{p, err}
		}(i)
	}
	return pa
}

// build finishes a prepared layer, or builds it in one pass.
func (pa *preparing) build(ctx context.Context, b builder.Builder, i int, j *layerJob, parent *builder.BuiltLayer, chainDir string) (*builder.BuiltLayer, error) {
	if pa.tp == nil || pa.results[i] == nil {
		return b.BuildLayer(ctx, j.src, parent, chainDir)
	}
	var r prepResult
	select {
	case r = <-pa.results[i]:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, r.err
	}
	return pa.tp.Finish(ctx, r.p, parent)
}

// discard waits for every Prepare and removes what was not finished (the
// context is cancelled first by buildChain's own defer on failure).
func (pa *preparing) discard() {
	pa.wg.Wait()
	for _, p := range pa.got {
		_ = p.Discard()
	}
}

// opener returns the LayerSource.Open for layer i, counting fetched bytes.
func (c *Converter) opener(t registry.Target, i, n int) func(context.Context) (io.ReadCloser, error) {
	return func(ctx context.Context) (io.ReadCloser, error) {
		rc, err := c.reg.OpenLayer(ctx, t, t.Layers[i])
		if err != nil {
			return nil, err
		}
		return readcount.New(rc, 4<<20, func(total, delta int64) { // at most every 4 MiB
			c.obs.Bytes("fetched", delta)
			c.emit(Event{Subject: t.Ref.String(), Stage: StageBuild, Layer: i + 1, Layers: n, Bytes: total})
		}), nil
	}
}
