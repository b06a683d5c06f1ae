package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/wclayer"
)

// ConvertAdapter is the real Converter: it joins queue requests and the
// conversion of images (package convert), which know nothing of each other.
type ConvertAdapter struct {
	reg     *registry.Client
	b       builder.Builder
	cache   *convert.Cache
	workDir string
	log     *zap.Logger
	obs     convert.Observer    // optional, in addition to the per-request counters
	shared  convert.SharedCache // the cimconv-chains KV, once bound
	// convOpts are added to every Converter (WithConvertOptions).
	convOpts []convert.Option
}

// AdapterOption configures a ConvertAdapter.
type AdapterOption func(*ConvertAdapter)

// WithWorkDir sets where chains are built.
func WithWorkDir(dir string) AdapterOption { return func(a *ConvertAdapter) { a.workDir = dir } }

// WithConvertOptions adds options to every Converter the adapter makes
// (e.g. convert.WithSigner).
func WithConvertOptions(opts ...convert.Option) AdapterOption {
	return func(a *ConvertAdapter) { a.convOpts = append(a.convOpts, opts...) }
}

// WithAdapterLogger sets the adapter's logger.
func WithAdapterLogger(l *zap.Logger) AdapterOption { return func(a *ConvertAdapter) { a.log = l } }

// WithObserver also reports every conversion's measurements to o.
func WithObserver(o convert.Observer) AdapterOption { return func(a *ConvertAdapter) { a.obs = o } }

// NewConvertAdapter returns the Converter that converts with b through reg,
// caching built layers in cache.
func NewConvertAdapter(reg *registry.Client, b builder.Builder, cache *convert.Cache, opts ...AdapterOption) *ConvertAdapter {
	a := &ConvertAdapter{reg: reg, b: b, cache: cache, log: zap.NewNop()}
	for _, o := range opts {
		o(a)
	}
	return a
}

// BindQueue shares built layers with every worker through the queue's
// chain cache (service.Start calls it once the queue is open).
func (a *ConvertAdapter) BindQueue(q *queue.Queue) {
	host, _ := os.Hostname()
	a.shared = chainsCache{c: q.Chains(), owner: fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano()), ttl: 30 * time.Minute}
}

// chainsCache adapts queue.Chains to convert.SharedCache.
type chainsCache struct {
	c     *queue.Chains
	owner string
	ttl   time.Duration
}

func (k chainsCache) Acquire(ctx context.Context, key string) ([]byte, bool, error) {
	return k.c.Acquire(ctx, key, k.owner, k.ttl)
}
func (k chainsCache) Put(ctx context.Context, key string, v []byte) error {
	return k.c.Put(ctx, key, v)
}
func (k chainsCache) Release(ctx context.Context, key string) error {
	return k.c.Release(ctx, key, k.owner)
}
func (k chainsCache) Renew(ctx context.Context, key string) (bool, error) {
	return k.c.Claim(ctx, key, k.owner, k.ttl) // the owner's Claim renews
}

// reqObserver counts one request's traffic and forwards to next.
type reqObserver struct {
	fetched, pushed atomic.Int64
	next            convert.Observer
}

func (o *reqObserver) Stage(s string, d time.Duration, err error) {
	if o.next != nil {
		o.next.Stage(s, d, err)
	}
}
func (o *reqObserver) Layer(cached bool) {
	if o.next != nil {
		o.next.Layer(cached)
	}
}
func (o *reqObserver) Bytes(direction string, n int64) {
	if direction == "fetched" {
		o.fetched.Add(n)
	} else {
		o.pushed.Add(n)
	}
	if o.next != nil {
		o.next.Bytes(direction, n)
	}
}

// Convert implements Converter.
func (a *ConvertAdapter) Convert(ctx context.Context, req queue.Request, progress func(stage string)) (*queue.Result, error) {
	platform := req.Platform
	if platform == "" {
		platform = "windows/amd64"
	}
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, Permanent(fmt.Errorf("platform %q: %w", platform, err))
	}
	policy, err := registry.ParseOSVersionPolicy(req.OSVersion)
	if err != nil {
		return nil, Permanent(err)
	}
	if name := a.b.Capabilities().Name; req.Builder != "" && req.Builder != builder.NameAuto && req.Builder != name {
		return nil, Permanent(fmt.Errorf("request wants builder %q; this worker builds with %q", req.Builder, name))
	}
	obs := &reqObserver{next: a.obs}
	last := ""
	conv := convert.New(a.reg, a.b, a.cache, append(a.convOpts[:len(a.convOpts):len(a.convOpts)], // a copy per request
		convert.WithLogger(a.log.With(zap.String("image", req.Image))),
		convert.WithWorkDir(a.workDir),
		convert.WithObserver(obs),
		convert.WithSharedCache(a.shared),
		convert.WithProgress(func(e convert.Event) {
			if e.Stage != last {
				last = e.Stage
				progress(e.Stage)
			}
		}))...)
	progress(convert.StageResolve)
	res, err := conv.Convert(ctx, convert.Request{Image: req.Image, Platform: *p, OSVersion: policy, Force: req.Force})
	if errors.Is(err, convert.ErrNotAnImage) {
		// A registry told us about our own artifact (or a referrers index):
		// nothing to convert, and no reason to retry or dead-letter.
		a.log.Info("not an image; ignored", zap.String("image", req.Image))
		return &queue.Result{}, nil
	}
	if err != nil {
		return nil, Classify(err)
	}
	out := &queue.Result{BytesFetched: obs.fetched.Load(), BytesPushed: obs.pushed.Load()}
	for _, im := range res.Images {
		d := im.Subject
		if i := len(d) - 71; i >= 0 {
			d = d[i:] // "sha256:<hex>" of repo@sha256:<hex>
		}
		out.SubjectDigests = append(out.SubjectDigests, d)
		out.ArtifactDigests = append(out.ArtifactDigests, im.Artifact)
		for _, l := range im.Layers {
			if l.Built {
				out.LayersBuilt++
			} else {
				out.LayersCached++
			}
		}
	}
	return out, nil
}

// Classify marks errors retrying cannot fix as permanent and registry
// hiccups as transient; anything else is retried until max-deliver.
func Classify(err error) error {
	var lerr *wclayer.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case registry.IsTransient(err):
		return Transient(err)
	case errors.Is(err, registry.ErrNotWindows), errors.Is(err, registry.ErrNoMatch),
		errors.Is(err, registry.ErrForeignLayerRefused), errors.Is(err, registry.ErrNotFound),
		errors.Is(err, registry.ErrDigestMismatch), errors.Is(err, registry.ErrReferrersUnsupported),
		errors.Is(err, registry.ErrInsecureRefused),
		errors.Is(err, portable.ErrDeltaHives), errors.Is(err, convert.ErrUnmerged),
		errors.As(err, &lerr), errors.Is(err, artifact.ErrBlob):
		return Permanent(err)
	}
	return err
}
