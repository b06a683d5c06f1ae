package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry"
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
	// claimTTL is the build-claim lifetime (0: DefaultClaimTTL).
	claimTTL time.Duration
	policy   *RegistryPolicy
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

// DefaultClaimTTL is how long a build claim lives without a renewal: the
// live holder renews it every third of that, so a dead holder's claim is
// taken over within about this long.
const DefaultClaimTTL = 45 * time.Second

// WithRegistryPolicy refuses requests for registries p does not allow
// (permanently: they are dead-lettered). Without one every registry is
// contacted.
func WithRegistryPolicy(p *RegistryPolicy) AdapterOption {
	return func(a *ConvertAdapter) { a.policy = p }
}

// WithClaimTTL sets the build-claim lifetime (default DefaultClaimTTL).
func WithClaimTTL(d time.Duration) AdapterOption { return func(a *ConvertAdapter) { a.claimTTL = d } }

// BindQueue shares built layers with every worker through the queue's
// chain cache (service.Start calls it once the queue is open).
func (a *ConvertAdapter) BindQueue(q *queue.Queue) {
	ttl := a.claimTTL
	if ttl <= 0 {
		ttl = DefaultClaimTTL
	}
	a.shared = &chainsCache{c: q.Chains(), worker: WorkerName(), ttl: ttl, held: map[string]*queue.Claim{}}
}

// WorkerName names this process in claims and logs: host-pid, so two
// workers on one host are told apart.
func WorkerName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// chainsCache adapts queue.Chains to convert.SharedCache. Each won claim is
// its own (a token per claim): a second conversion in this process waits
// for the first like any other worker would.
type chainsCache struct {
	c      *queue.Chains
	worker string
	ttl    time.Duration

	mu   sync.Mutex
	held map[string]*queue.Claim
}

func (k *chainsCache) Acquire(ctx context.Context, key string) ([]byte, bool, error) {
	j := waiterFrom(ctx)
	n, of, _ := convert.LayerOf(ctx)
	v, cl, err := k.c.Acquire(ctx, key, k.worker, k.ttl, queue.OnWait(func(h queue.ClaimHolder) {
		if j != nil {
			j.waiting(ctx, n, of, h.Name())
		}
	}))
	if j != nil {
		if rerr := j.resumed(ctx); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		if cl != nil {
			_ = cl.Release(context.WithoutCancel(ctx))
		}
		return nil, false, err
	}
	if cl == nil {
		return v, false, nil
	}
	k.mu.Lock()
	k.held[key] = cl
	k.mu.Unlock()
	return nil, true, nil
}

func (k *chainsCache) Put(ctx context.Context, key string, v []byte) error {
	return k.c.Put(ctx, key, v)
}

func (k *chainsCache) Release(ctx context.Context, key string) error {
	k.mu.Lock()
	cl := k.held[key]
	delete(k.held, key)
	k.mu.Unlock()
	if cl == nil {
		return nil
	}
	return cl.Release(ctx)
}

// Renew reports whether the claim is still held: the claim renews itself
// every third of its ttl while this process lives.
func (k *chainsCache) Renew(_ context.Context, key string) (bool, error) {
	k.mu.Lock()
	cl := k.held[key]
	k.mu.Unlock()
	return cl != nil && cl.Held(), nil
}

// reqObserver counts one request's traffic, reports stage durations to the
// worker's metrics (stages), and forwards to next.
type reqObserver struct {
	fetched, pushed atomic.Int64
	stages          *metrics.Metrics
	next            convert.Observer
}

func (o *reqObserver) Stage(s string, d time.Duration, err error) {
	o.stages.ObserveStage(s, d, err) // nil-safe
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

// reportsStages: convert reports resolve, plan, build, pack and push itself.
func (a *ConvertAdapter) reportsStages() {}

// Convert implements Converter.
func (a *ConvertAdapter) Convert(ctx context.Context, req queue.Request, progress func(stage string)) (*queue.Result, error) {
	if err := a.policy.Check(ctx, req.Image); err != nil {
		return nil, err
	}
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
	obs := &reqObserver{next: a.obs, stages: stageObserverFrom(ctx)}
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
		return &queue.Result{Ignored: "not an image (cimconv's own artifact or a referrers index)"}, nil
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

// Classify marks errors retrying cannot fix as permanent and those a
// retry may fix as transient, from their errdefs kinds (errdefs.Classify);
// a cancellation and anything of no kind are left unmarked (retried until
// max-deliver).
func Classify(err error) error {
	switch errdefs.Classify(err) {
	case errdefs.RetryMayHelp:
		return Transient(err)
	case errdefs.RetryCannotHelp:
		return Permanent(err)
	}
	return err
}
