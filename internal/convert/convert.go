package convert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/version"
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

// Option configures a Converter.
type Option func(*Converter)

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(c *Converter) { c.log = l } }

// WithObserver sets the metrics observer.
func WithObserver(o Observer) Option { return func(c *Converter) { c.obs = o } }

// WithProgress sets a progress callback (called from several goroutines,
// serialized by the converter).
func WithProgress(f func(Event)) Option { return func(c *Converter) { c.progress = f } }

// WithWorkDir sets where chains are built (default: the OS temp dir).
func WithWorkDir(dir string) Option { return func(c *Converter) { c.workDir = dir } }

// WithClock sets the clock used for the created annotation of
// non-deterministic builds.
func WithClock(now func() time.Time) Option { return func(c *Converter) { c.now = now } }

// WithPushConcurrency bounds parallel blob uploads (default 3).
func WithPushConcurrency(n int) Option { return func(c *Converter) { c.pushConc = n } }

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
	now      func() time.Time
	pushConc int
	shared   SharedCache
	// renewEvery is how often held build claims are renewed.
	renewEvery time.Duration
}

// New returns a Converter that reads and writes through reg, builds with b
// and caches built layers in cache.
func New(reg *registry.Client, b builder.Builder, cache *Cache, opts ...Option) *Converter {
	c := &Converter{reg: reg, b: b, cache: cache, log: zap.NewNop(), obs: nopObserver{}, now: time.Now, pushConc: 3, renewEvery: claimRenewInterval}
	for _, o := range opts {
		o(c)
	}
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
var ErrUnmerged = errors.New("the build kept delta hives unmerged; refusing to publish it")

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
// content; an existing artifact with the same key is reused.
func (c *Converter) OptionsKey() string {
	caps := c.b.Capabilities()
	return fmt.Sprintf("builder=%s,format=%s", caps.Name, caps.Format)
}

func (c *Converter) emit(e Event) {
	if c.progress == nil {
		return
	}
	c.progMu.Lock()
	defer c.progMu.Unlock()
	c.progress(e)
}

// layerJob is one layer of a chain on its way to the artifact.
type layerJob struct {
	src     builder.LayerSource
	entry   CacheEntry
	cached  bool
	built   *builder.BuiltLayer
	packed  chan struct{} // closed when entry is final (packed and cached)
	packErr error
	// claim is the shared-cache key this worker claimed to build the layer
	// ("" when none); it is Put after the blob is pushed, else released.
	// Written before the renewal goroutine reads it (claimMu).
	claim   string
	claimMu sync.Mutex
}

func (j *layerJob) claimKey() string {
	j.claimMu.Lock()
	defer j.claimMu.Unlock()
	return j.claim
}

func (c *Converter) convertTarget(ctx context.Context, t registry.Target, req Request) (*ImageResult, error) {
	subject := t.Ref.String()
	ir := &ImageResult{Subject: subject, Platform: platformString(t.Platform), OSVersion: t.Platform.OSVersion}
	log := c.log.With(zap.String("image", subject))
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

	if c.shared != nil {
		defer c.releaseClaims(jobs)
		rctx, stopRenew := context.WithCancel(ctx)
		defer stopRenew()
		go c.renewClaims(rctx, jobs, c.renewEvery)
	}
	if err := c.buildChain(ctx, t, jobs, chainDir, log); err != nil {
		return nil, err
	}
	// Build info comes from the first built layer, or from the cache.
	cfg := &artifact.Config{
		Subject:       t.Descriptor.Digest.String(),
		FormatVersion: version.FormatVersion,
		Converter:     version.Version,
		Options:       optsKey,
	}
	for i, j := range jobs {
		b := j.entry.Build
		if i == 0 {
			cfg.Format, cfg.CimVersion, cfg.Builder, cfg.WindowsBuild, cfg.Experimental = b.Format, b.CimVersion, b.Builder, b.WindowsBuild, b.Experimental
		}
		cfg.Experimental = cfg.Experimental || b.Experimental
		cfg.Layers = append(cfg.Layers, j.entry.Layer)
		ir.Layers = append(ir.Layers, LayerResult{
			SourceDigest: j.src.Digest, DiffID: j.src.DiffID, ChainID: j.src.ChainID,
			Blob: j.entry.Blob.Digest, Cim: j.entry.Layer.Cim, Built: !j.cached,
		})
	}
	created := c.now().UTC()
	if c.b.Capabilities().Deterministic {
		// Same input, same bytes: a deterministic build takes its time from
		// the image (the Unix epoch when the image has none), so converting
		// twice yields the same artifact digest.
		created = time.Unix(0, 0).UTC()
		if t.Config != nil && !t.Config.Created.IsZero() {
			created = t.Config.Created.UTC()
		}
	}
	manifest, cfgBytes, err := buildManifest(t, cfg, jobs, created)
	if err != nil {
		return nil, err
	}
	if req.OutputDir != "" {
		d, err := writeLayout(req.OutputDir, c.cache, jobs, cfgBytes, manifest)
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

// plan turns the image's layers into jobs with diffIDs and chainIDs.
func plan(t registry.Target) ([]*layerJob, error) {
	if len(t.Layers) == 0 {
		return nil, fmt.Errorf("image %s has no layers", t.Ref)
	}
	var jobs []*layerJob
	chain := ""
	for _, l := range t.Layers {
		if l.DiffID.Hex == "" {
			return nil, fmt.Errorf("image %s: layer %s has no diffID in the config", t.Ref, l.Digest)
		}
		chain = builder.ChainID(chain, l.DiffID.String())
		jobs = append(jobs, &layerJob{
			src: builder.LayerSource{
				Digest: l.Digest.String(), DiffID: l.DiffID.String(), ChainID: chain,
				MediaType: string(l.MediaType), Size: l.Size,
			},
			packed: make(chan struct{}),
		})
	}
	return jobs, nil
}

// existing finds an artifact for t built with the same format and options.
func (c *Converter) existing(ctx context.Context, t registry.Target, optsKey string) (string, bool, error) {
	descs, err := c.reg.Referrers(ctx, t.Ref, artifact.ArtifactType)
	if err != nil {
		return "", false, fmt.Errorf("look up existing artifacts: %w", err)
	}
	for _, d := range descs {
		a := d.Annotations
		if a[artifact.AnnotationFormatVersion] == version.FormatVersion && a[artifact.AnnotationOptions] == optsKey {
			return d.Digest.String(), true, nil
		}
	}
	return "", false, nil
}

// buildChain builds or reuses every layer, in order. Packing and caching of a
// built layer overlap with building the next one.
func (c *Converter) buildChain(ctx context.Context, t registry.Target, jobs []*layerJob, chainDir string, log *zap.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	// The cached prefix of the chain: reused, not built.
	parentBlob := ""
	firstBuilt := len(jobs)
	for i, j := range jobs {
		e, ok, err := c.cache.Get(j.src.ChainID, parentBlob)
		if err != nil {
			return err
		}
		// A layer is reused only from the same builder: forked CIMs of
		// one builder cannot sit on parents written by another.
		ok = ok && e.Build.Builder == c.b.Capabilities().Name
		if !ok && c.shared != nil {
			if e, ok, err = c.fromShared(ctx, j, parentBlob); err != nil {
				return err
			}
		}
		if !ok {
			firstBuilt = i
			break
		}
		j.entry, j.cached = e, true
		close(j.packed)
		parentBlob = e.Blob.Digest
		c.obs.Layer(true)
		c.emit(Event{Subject: t.Ref.String(), Stage: StageBuild, Layer: i + 1, Layers: len(jobs), ChainID: j.src.ChainID, Cached: true, Done: true})
	}
	for i := firstBuilt; i < len(jobs); i++ {
		jobs[i].src.Open = c.opener(t, i, len(jobs))
	}
	// A two-phase builder prepares every remaining layer's data at once;
	// only the metadata is done below, in chain order.
	ahead := c.prepareAhead(ctx, jobs, firstBuilt, chainDir)
	defer func() {
		cancel() // stop Prepares still running after a failure
		ahead.discard()
	}()

	for i := firstBuilt; i < len(jobs); i++ {
		j := jobs[i]
		// The parent chain must be on disk in chainDir.
		var parent *builder.BuiltLayer
		if i > 0 {
			var err error
			if parent, err = c.materialize(jobs[:i], chainDir); err != nil {
				return err
			}
		}
		start := time.Now()
		built, err := ahead.build(ctx, c.b, i, j, parent, chainDir)
		c.obs.Stage(StageBuild, time.Since(start), err)
		if err != nil {
			return fmt.Errorf("layer %d/%d (%s): %w", i+1, len(jobs), j.src.Digest, err)
		}
		if built.UnmergedDeltas {
			return ErrUnmerged
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
			j.packErr = c.pack(ctx, j, prev)
			if j.packErr != nil {
				cancel()
			}
		}(i, j, prev)
	}
	wg.Wait()
	for i, j := range jobs {
		if j.packErr != nil {
			return fmt.Errorf("layer %d/%d: pack: %w", i+1, len(jobs), j.packErr)
		}
	}
	return ctx.Err()
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
			p, err := tp.Prepare(ctx, jobs[i].src, i, chainDir)
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

// materialize makes sure the CIM files of jobs (a parent chain) are in
// chainDir, unpacking cached blobs where the layer was not built in this run,
// and returns the BuiltLayer of the last one.
func (c *Converter) materialize(jobs []*layerJob, chainDir string) (*builder.BuiltLayer, error) {
	var parent *builder.BuiltLayer
	for _, j := range jobs {
		if j.built != nil {
			parent = j.built
			continue
		}
		<-j.packed
		if j.packErr != nil {
			return nil, j.packErr
		}
		side := builder.SideDir(chainDir, j.src.ChainID)
		f, err := os.Open(c.cache.BlobPath(j.src.ChainID))
		if err != nil {
			return nil, fmt.Errorf("chain cache %s: %w", j.src.ChainID, err)
		}
		_, err = artifact.Unpack(f, chainDir, side, &j.entry.Layer)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("chain cache %s: %w", j.src.ChainID, err)
		}
		b := j.entry.Build
		j.built = &builder.BuiltLayer{
			ChainID: j.src.ChainID, DiffID: j.src.DiffID, SourceDigest: j.src.Digest,
			CimDir: chainDir, CimName: j.entry.Layer.Cim, CimFiles: j.entry.Layer.CimFiles,
			SideDir: side, SideFiles: j.entry.Layer.SideFiles,
			Format: b.Format, CimVersion: b.CimVersion, Builder: b.Builder, WindowsBuild: b.WindowsBuild,
			Experimental: b.Experimental, IntegrityDigest: j.entry.Layer.Integrity, Parent: parent,
		}
		parent = j.built
	}
	return parent, nil
}

// opener returns the LayerSource.Open for layer i, counting fetched bytes.
func (c *Converter) opener(t registry.Target, i, n int) func(context.Context) (io.ReadCloser, error) {
	return func(ctx context.Context) (io.ReadCloser, error) {
		rc, err := c.reg.OpenLayer(ctx, t, t.Layers[i])
		if err != nil {
			return nil, err
		}
		return &countingReader{rc: rc, report: func(total, delta int64) {
			c.obs.Bytes("fetched", delta)
			c.emit(Event{Subject: t.Ref.String(), Stage: StageBuild, Layer: i + 1, Layers: n, Bytes: total})
		}}, nil
	}
}

// pack writes the layer's blob into the cache.
func (c *Converter) pack(ctx context.Context, j, prev *layerJob) (err error) {
	start := time.Now()
	defer func() { c.obs.Stage(StagePack, time.Since(start), err) }()
	parentBlob := ""
	if prev != nil {
		<-prev.packed
		if prev.packErr != nil {
			return fmt.Errorf("parent layer failed")
		}
		parentBlob = prev.entry.Blob.Digest
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b := j.built
	tmp, err := os.CreateTemp(c.workDirOrTemp(), "blob-*.tar.zst")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	info, err := artifact.Pack(tmp, b.CimDir, b.CimFiles, b.SideDir, b.SideFiles)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	j.entry = CacheEntry{
		ChainID:    j.src.ChainID,
		ParentBlob: parentBlob,
		Blob:       info,
		Layer: artifact.LayerConfig{
			SourceDigest: j.src.Digest, DiffID: j.src.DiffID, ChainID: j.src.ChainID,
			Cim: b.CimName, CimFiles: b.CimFiles, SideFiles: b.SideFiles, Integrity: b.IntegrityDigest,
		},
		Build: BuildInfo{Builder: b.Builder, Format: b.Format, CimVersion: b.CimVersion, WindowsBuild: b.WindowsBuild, Experimental: b.Experimental},
	}
	return c.cache.Put(j.entry, tmp.Name())
}

// buildManifest returns the artifact manifest and config bytes.
func buildManifest(t registry.Target, cfg *artifact.Config, jobs []*layerJob, created time.Time) ([]byte, []byte, error) {
	cfgBytes, err := artifact.MarshalConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	cfgHash, cfgSize, err := v1.SHA256(bytes.NewReader(cfgBytes))
	if err != nil {
		return nil, nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifact.ArtifactType,
		Config:        v1.Descriptor{MediaType: types.MediaType(artifact.ArtifactType), Digest: cfgHash, Size: cfgSize},
		Subject:       &v1.Descriptor{MediaType: t.Descriptor.MediaType, Digest: t.Descriptor.Digest, Size: t.Descriptor.Size},
		Annotations: map[string]string{
			artifact.AnnotationCreated:       created.Format(time.RFC3339),
			artifact.AnnotationFormatVersion: cfg.FormatVersion,
			artifact.AnnotationConverter:     cfg.Converter,
			artifact.AnnotationOptions:       cfg.Options,
			artifact.AnnotationBuilder:       cfg.Builder,
			artifact.AnnotationCimFormat:     cfg.Format,
			artifact.AnnotationCimVersion:    cfg.CimVersion,
		},
	}
	if cfg.WindowsBuild != "" {
		m.Annotations[artifact.AnnotationWindowsBuild] = cfg.WindowsBuild
	}
	if cfg.Experimental {
		m.Annotations[artifact.AnnotationExperimental] = "true"
	}
	for _, j := range jobs {
		h, err := v1.NewHash(j.entry.Blob.Digest)
		if err != nil {
			return nil, nil, err
		}
		b := j.entry.Build
		ann := map[string]string{
			artifact.AnnotationSourceDigest: j.src.Digest,
			artifact.AnnotationSourceDiffID: j.src.DiffID,
			artifact.AnnotationChainID:      j.src.ChainID,
			artifact.AnnotationCimFormat:    b.Format,
			artifact.AnnotationCimVersion:   b.CimVersion,
			artifact.AnnotationBuilder:      b.Builder,
		}
		if b.WindowsBuild != "" {
			ann[artifact.AnnotationWindowsBuild] = b.WindowsBuild
		}
		if b.Experimental {
			ann[artifact.AnnotationExperimental] = "true"
		}
		if j.entry.Layer.Integrity != "" {
			ann[artifact.AnnotationIntegrity] = j.entry.Layer.Integrity
		}
		m.Layers = append(m.Layers, v1.Descriptor{
			MediaType: types.MediaType(artifact.LayerMediaType), Digest: h, Size: j.entry.Blob.Size, Annotations: ann,
		})
	}
	mb, err := json.Marshal(m)
	return mb, cfgBytes, err
}

// push uploads blobs (in parallel), then the manifest last.
func (c *Converter) push(ctx context.Context, t registry.Target, jobs []*layerJob, cfgBytes, manifest []byte) (string, error) {
	repo := t.Ref.Context()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.pushConc)
	for _, j := range jobs {
		g.Go(func() error {
			h, err := v1.NewHash(j.entry.Blob.Digest)
			if err != nil {
				return err
			}
			desc := v1.Descriptor{MediaType: types.MediaType(artifact.LayerMediaType), Digest: h, Size: j.entry.Blob.Size}
			var mounts []name.Repository
			for _, r := range j.entry.Repos {
				if r == repo.String() {
					continue
				}
				if mr, err := name.NewRepository(r, name.Insecure); err == nil && mr.RegistryStr() == repo.RegistryStr() {
					mounts = append(mounts, mr)
				}
			}
			path := c.cache.BlobPath(j.src.ChainID)
			err = c.reg.PushBlob(gctx, repo, desc, func() (io.ReadCloser, error) { return os.Open(path) }, mounts...)
			if err != nil {
				return fmt.Errorf("push layer blob %s: %w", h, err)
			}
			c.obs.Bytes("pushed", j.entry.Blob.Size)
			if err := c.cache.AddRepo(j.entry, repo.String()); err != nil {
				return err
			}
			if key := j.claimKey(); key != "" {
				// The blob is in a registry now: other workers may take it.
				v, err := json.Marshal(sharedValue{Entry: j.entry, Repo: repo.String()})
				if err != nil {
					return err
				}
				if err := c.shared.Put(gctx, key, v); err != nil {
					return fmt.Errorf("shared chain cache %s: %w", j.src.ChainID, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	ch, cs, _ := v1.SHA256(bytes.NewReader(cfgBytes))
	cfgDesc := v1.Descriptor{MediaType: types.MediaType(artifact.ArtifactType), Digest: ch, Size: cs}
	if err := c.reg.PushBlob(ctx, repo, cfgDesc, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cfgBytes)), nil }); err != nil {
		return "", fmt.Errorf("push artifact config: %w", err)
	}
	subject := v1.Descriptor{MediaType: t.Descriptor.MediaType, Digest: t.Descriptor.Digest, Size: t.Descriptor.Size}
	d, err := c.reg.PushArtifact(ctx, repo, manifest, types.OCIManifestSchema1, subject)
	if err != nil {
		return "", fmt.Errorf("push artifact manifest: %w", err)
	}
	c.obs.Bytes("pushed", int64(len(manifest)+len(cfgBytes)))
	return d.String(), nil
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

type nopObserver struct{}

func (nopObserver) Stage(string, time.Duration, error) {}
func (nopObserver) Layer(bool)                         {}
func (nopObserver) Bytes(string, int64)                {}

// countingReader reports fetched bytes at most every 4 MiB.
type countingReader struct {
	rc       io.ReadCloser
	total    int64
	reported int64
	report   func(total, delta int64)
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.total += int64(n)
	if r.total-r.reported >= 4<<20 || (err == io.EOF && r.total > r.reported) {
		r.report(r.total, r.total-r.reported)
		r.reported = r.total
	}
	return n, err
}

func (r *countingReader) Close() error {
	if r.total > r.reported {
		r.report(r.total, r.total-r.reported)
		r.reported = r.total
	}
	return r.rc.Close()
}
