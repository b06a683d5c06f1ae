package convert

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
)

// Stages reported to the Observer (and so to cimconv_stage_duration_seconds).
const (
	StageResolve = "resolve"
	StagePlan    = "plan"
	StageBuild   = "build" // fetch + decompress + build, one streaming pass
	StagePack    = "pack"
	StagePush    = "push"
)

// Observer receives measurements; the worker maps them onto Prometheus.
type Observer interface {
	Stage(stage string, d time.Duration, err error)
	Layer(cached bool)
	Bytes(direction string, n int64) // "fetched" | "pushed"
}

// Event is one progress report.
type Event struct {
	Subject string // repo@digest of the image manifest being converted
	Stage   string
	Layer   int // 1-based; 0 when not about a layer
	Layers  int
	ChainID string
	Cached  bool
	Bytes   int64 // bytes fetched so far for the layer (StageBuild)
	Done    bool  // the stage finished for this layer/image
}

// Converter converts images. It is safe for concurrent use.
type Converter struct {
	reg      *registry.Client
	b        builder.Builder
	cache    *Cache
	log      *zap.Logger
	obs      Observer
	progress func(Event)
	progMu   sync.Mutex
	workDir  string
	shared   SharedCache
	flights  flights
	// renewEvery is how often held build claims are renewed.
	renewEvery time.Duration
	signer     *sigstore.Signer
	self       trust.Verifier // checks existing artifacts carry signer's signature
}

// New returns a Converter that reads and writes through reg, builds with b
// and caches built layers in cache.
func New(reg *registry.Client, b builder.Builder, cache *Cache, opts ...Option) *Converter {
	c := &Converter{reg: reg, b: b, cache: cache, log: zap.NewNop(), obs: nopObserver{}, renewEvery: claimRenewInterval}
	for _, o := range opts {
		o(c)
	}
	c.initSigning()
	return c
}

// Request says what to convert.
type Request struct {
	// Image is a tag or digest reference.
	Image string
	// Platform selects os/architecture (default windows/amd64).
	Platform v1.Platform
	// OSVersion selects among the Windows manifests of an index.
	OSVersion registry.OSVersionPolicy
	// Force converts even if a matching artifact exists.
	Force bool
	// OutputDir, when set, writes the artifacts as an OCI layout there
	// instead of pushing them (a dry run for CI).
	OutputDir string
}

// Result is the outcome of one Convert call: one entry per Windows manifest.
type Result struct {
	Images []ImageResult `json:"images"`
}

// ImageResult is the outcome for one image manifest.
type ImageResult struct {
	Subject   string        `json:"subject"` // repo@digest of the image manifest
	Platform  string        `json:"platform"`
	OSVersion string        `json:"osVersion,omitempty"`
	Artifact  string        `json:"artifact"` // digest of the artifact manifest
	Existing  bool          `json:"existing"` // a matching artifact already existed; nothing was built
	Layers    []LayerResult `json:"layers,omitempty"`
}

// LayerResult is the outcome for one layer.
type LayerResult struct {
	SourceDigest string `json:"sourceDigest"`
	DiffID       string `json:"diffID"`
	ChainID      string `json:"chainID"`
	Blob         string `json:"blob"`
	Cim          string `json:"cim"`
	Built        bool   `json:"built"` // false: reused from the chain cache
}

// ErrUnmerged is returned when a build kept delta hives unmerged: such a
// chain is for inspection only and is never published.
var ErrUnmerged = errdefs.New(errdefs.ErrPermanent, "the build kept delta hives unmerged; refusing to publish it")

// Convert converts every Windows manifest ref resolves to.
func (c *Converter) Convert(ctx context.Context, req Request) (*Result, error) {
	if req.Platform.OS == "" {
		req.Platform.OS = "windows"
	}
	if req.Platform.Architecture == "" {
		req.Platform.Architecture = "amd64"
	}
	start := time.Now()
	if skip, err := c.notAnImage(ctx, req.Image); err != nil {
		c.obs.Stage(StageResolve, time.Since(start), err)
		return nil, fmt.Errorf("resolve %s: %w", req.Image, err)
	} else if skip {
		return nil, fmt.Errorf("%s: %w", req.Image, ErrNotAnImage)
	}
	targets, err := c.reg.Resolve(ctx, req.Image, req.Platform, req.OSVersion)
	c.obs.Stage(StageResolve, time.Since(start), err)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", req.Image, err)
	}
	res := &Result{}
	for _, t := range targets {
		ir, err := c.convertTarget(ctx, t, req)
		if err != nil {
			return res, fmt.Errorf("convert %s: %w", t.Ref, err)
		}
		res.Images = append(res.Images, *ir)
	}
	return res, nil
}

// OptionsKey names the conversion options that change the artifact's
// content (see optionsKey). An existing artifact with the same key whose
// hive merge this converter also does is reused; chain cache entries record
// it and are reused under the same rule.
func (c *Converter) OptionsKey() string { return optionsKey(c.b.Capabilities()) }

func (c *Converter) emit(e Event) {
	if c.progress == nil {
		return
	}
	c.progMu.Lock()
	defer c.progMu.Unlock()
	c.progress(e)
}

func (c *Converter) convertTarget(ctx context.Context, t registry.Target, req Request) (*ImageResult, error) {
	subject := t.Ref.String()
	ir := &ImageResult{Subject: subject, Platform: registry.PlatformString(t.Platform), OSVersion: t.Platform.OSVersion}
	log := c.log.With(zap.String("subject", subject))
	optsKey := c.OptionsKey()

	start := time.Now()
	jobs, err := plan(t)
	c.obs.Stage(StagePlan, time.Since(start), err)
	if err != nil {
		return nil, err
	}
	if req.OutputDir == "" && !req.Force {
		if d, ok, err := c.existing(ctx, t, optsKey); err != nil {
			return nil, err
		} else if ok {
			log.Info("artifact exists; skipping", zap.String("artifact", d))
			ir.Existing, ir.Artifact = true, d
			return ir, nil
		}
	}

	if err := os.MkdirAll(c.workDirOrTemp(), 0o755); err != nil {
		return nil, err
	}
	chainDir, err := os.MkdirTemp(c.workDirOrTemp(), "chain-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(chainDir)

	defer func() {
		for _, j := range jobs {
			j.done()
		}
	}()
	if c.shared != nil {
		defer c.releaseClaims(jobs)
		rctx, stopRenew := context.WithCancel(ctx)
		defer stopRenew()
		go c.renewClaims(rctx, jobs, c.renewEvery)
	}
	if err := c.buildChain(ctx, t, jobs, chainDir, log); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		ir.Layers = append(ir.Layers, LayerResult{
			SourceDigest: j.src.Digest, DiffID: j.src.DiffID, ChainID: j.src.ChainID,
			Blob: j.entry.Blob.Digest, Cim: j.entry.Layer.Cim, Built: !j.cached,
		})
	}
	manifest, cfgBytes, err := c.artifactFor(t, jobs, optsKey)
	if err != nil {
		return nil, err
	}
	if req.OutputDir != "" {
		d, err := writeLayout(req.OutputDir, jobs, cfgBytes, manifest)
		if err != nil {
			return nil, fmt.Errorf("write OCI layout %s: %w", req.OutputDir, err)
		}
		ir.Artifact = d
		return ir, nil
	}
	start = time.Now()
	d, err := c.push(ctx, t, jobs, cfgBytes, manifest)
	c.obs.Stage(StagePush, time.Since(start), err)
	if err != nil {
		return nil, err
	}
	ir.Artifact = d
	log.Info("artifact pushed", zap.String("artifact", d), zap.Int("layers", len(jobs)))
	return ir, nil
}

func (c *Converter) workDirOrTemp() string {
	if c.workDir != "" {
		return c.workDir
	}
	return filepath.Join(os.TempDir(), "cimconv")
}

type nopObserver struct{}

func (nopObserver) Stage(string, time.Duration, error) {}
func (nopObserver) Layer(bool)                         {}
func (nopObserver) Bytes(string, int64)                {}
