package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/devenv"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/service"
	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/worker"
)

// The serve hooks: the real conversion and the --dev environment.
func init() {
	serveConverter = newServeConverter
	serveDev = runDevEnv
}

// serveAdapter joins the worker (queue requests) and convert (images).
type serveAdapter struct {
	reg     *registry.Client
	b       builder.Builder
	cache   *convert.Cache
	workDir string
	log     *zap.Logger
	shared  convert.SharedCache // the cimconv-chains KV, once bound
}

// BindQueue shares built layers with every worker through the queue's
// chain cache (service.Start calls it once the queue is open).
func (a *serveAdapter) BindQueue(q *queue.Queue) {
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

func newServeConverter(ctx context.Context, cfg service.Config, log *zap.Logger) (worker.Converter, error) {
	rf := registryFlags{insecure: cfg.InsecureRegistries, dockerConfig: cfg.DockerConfig}
	bf := buildFlags{builder: cfg.Builder, format: cfg.CimFormat, cacheDir: cfg.CacheDir, workDir: cfg.WorkDir}
	if bf.cacheDir == "" {
		bf.cacheDir = filepath.Join(cfg.DataDir, "chains")
	}
	if bf.workDir == "" {
		bf.workDir = filepath.Join(cfg.DataDir, "work")
	}
	b, err := bf.selectBuilder(log)
	if err != nil {
		return nil, err
	}
	cache, err := convert.NewCache(filepath.Join(bf.cacheDir, b.Capabilities().Name))
	if err != nil {
		return nil, err
	}
	// Leftover chain directories of a killed process are not reused.
	_ = os.RemoveAll(bf.workDir)
	return &serveAdapter{reg: rf.client(log), b: b, cache: cache, workDir: bf.workDir, log: log}, nil
}

// reqObserver counts one request's traffic.
type reqObserver struct{ fetched, pushed atomic.Int64 }

func (o *reqObserver) Stage(string, time.Duration, error) {}
func (o *reqObserver) Layer(bool)                         {}
func (o *reqObserver) Bytes(direction string, n int64) {
	if direction == "fetched" {
		o.fetched.Add(n)
	} else {
		o.pushed.Add(n)
	}
}

// Convert implements worker.Converter.
func (a *serveAdapter) Convert(ctx context.Context, req queue.Request, progress func(stage string)) (*queue.Result, error) {
	platform := req.Platform
	if platform == "" {
		platform = "windows/amd64"
	}
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, worker.Permanent(fmt.Errorf("platform %q: %w", platform, err))
	}
	policy, err := registry.ParseOSVersionPolicy(req.OSVersion)
	if err != nil {
		return nil, worker.Permanent(err)
	}
	if name := a.b.Capabilities().Name; req.Builder != "" && req.Builder != builder.NameAuto && req.Builder != name {
		return nil, worker.Permanent(fmt.Errorf("request wants builder %q; this worker builds with %q", req.Builder, name))
	}
	obs := &reqObserver{}
	last := ""
	conv := convert.New(a.reg, a.b, a.cache,
		convert.WithLogger(a.log.With(zap.String("image", req.Image))),
		convert.WithWorkDir(a.workDir),
		convert.WithObserver(obs),
		convert.WithSharedCache(a.shared),
		convert.WithProgress(func(e convert.Event) {
			if e.Stage != last {
				last = e.Stage
				progress(e.Stage)
			}
		}))
	progress(convert.StageResolve)
	res, err := conv.Convert(ctx, convert.Request{Image: req.Image, Platform: *p, OSVersion: policy, Force: req.Force})
	if errors.Is(err, convert.ErrNotAnImage) {
		// A registry told us about our own artifact (or a referrers index):
		// nothing to convert, and no reason to retry or dead-letter.
		a.log.Info("not an image; ignored", zap.String("image", req.Image))
		return &queue.Result{}, nil
	}
	if err != nil {
		return nil, classify(err)
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

// classify marks errors retrying cannot fix as permanent and registry
// hiccups as transient; anything else is retried until max-deliver.
func classify(err error) error {
	var lerr *wclayer.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case registry.IsTransient(err):
		return worker.Transient(err)
	case errors.Is(err, registry.ErrNotWindows), errors.Is(err, registry.ErrNoMatch),
		errors.Is(err, registry.ErrForeignLayerRefused), errors.Is(err, registry.ErrNotFound),
		errors.Is(err, registry.ErrDigestMismatch), errors.Is(err, registry.ErrReferrersUnsupported),
		errors.Is(err, registry.ErrInsecureRefused),
		errors.Is(err, portable.ErrDeltaHives), errors.Is(err, convert.ErrUnmerged),
		errors.As(err, &lerr), errors.Is(err, artifact.ErrBlob):
		return worker.Permanent(err)
	}
	return err
}

// runDevEnv is `serve --dev`: a loopback registry with a sample image, and
// the commands to try.
func runDevEnv(ctx context.Context, env service.DevEnv) error {
	reg, err := devenv.StartRegistry("127.0.0.1:5000", "")
	if err != nil {
		// Port 5000 taken (another registry?): any free loopback port.
		if reg, err = devenv.StartRegistry("127.0.0.1:0", ""); err != nil {
			return err
		}
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = reg.Close(sctx)
	}()
	image := reg.Host() + "/sample/windows:ltsc2022"
	digest, err := devenv.PushSample(ctx, image)
	if err != nil {
		return err
	}
	env.Logger.Info("dev registry seeded", zap.String("registry", reg.Host()), zap.String("image", image), zap.String("digest", digest))
	nats := ""
	if env.NATSURL != "nats://127.0.0.1:4222" {
		nats = " --nats-url " + env.NATSURL
	}
	fmt.Fprintf(os.Stderr, `
cimconv dev environment is up:
  NATS (embedded, JetStream)  %s
  HTTP                        http://%s  (/metrics /healthz /readyz /webhooks/)
  registry (referrers API)    %s
  sample Windows image        %s
                              %s

Try, in another terminal:
  go run ./cmd/converter submit %s --wait%s
  go run ./cmd/converter status %s%s
  curl -s http://%s/metrics | grep '^cimconv_'
  go run ./cmd/converter fetch %s --dest /tmp/cims

Ctrl-C stops everything.
`, env.NATSURL, env.HTTPAddr, reg.Host(), image, digest, image, nats, image, nats, env.HTTPAddr, image)
	return nil
}
