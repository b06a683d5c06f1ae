package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/keymutex"
	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/readcount"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
)

// ReasonNoLabels: the extraction snapshot carries no cri.* labels (containerd
// was not told to pass them, see docs/node.md) and the layer is not cached.
const ReasonNoLabels = "no-labels"

// DefaultTimeout bounds the fast path of one layer, its artifact lookup and
// download, when WithTimeout is not given. Placing the downloaded files is
// local (renames, or copies across volumes) and not bounded by it: a layer
// whose bytes are here is placed rather than thrown away for an import.
const DefaultTimeout = 5 * time.Minute

// Snapshotter is containerd's cimfs snapshotter (or its stand-in) with the
// fast path around Prepare. Every other method is the inner snapshotter's.
type Snapshotter struct {
	snapshots.Snapshotter
	root string
	*resolver
	timeout     time.Duration
	log         *zap.Logger
	metrics     *metrics.Snapshotter
	positiveTTL time.Duration
	negativeTTL time.Duration
	now         func() time.Time

	locks   keymutex.Mutex // serializes the fast path per chainID
	sf      singleflight.Group
	mu      sync.Mutex
	results map[string]resolveResult
	// resolveFn is resolve; tests replace it.
	resolveFn func(ctx context.Context, imageRef, manifest string) (*resolved, error)
}

type resolveResult struct {
	r       *resolved
	err     error
	expires time.Time
}

// Option configures a Snapshotter.
type Option func(*Snapshotter)

// WithVerifier sets the trust check. Without one the fast path never runs
// (every layer falls through with reason "untrusted").
func WithVerifier(v trust.Verifier) Option { return func(s *Snapshotter) { s.verifier = v } }

// WithRegistry sets the registry client (default: anonymous, loopback plain
// HTTP only).
func WithRegistry(c *registry.Client) Option { return func(s *Snapshotter) { s.reg = c } }

// WithMirrors sets per-registry mirrors tried before the registry itself
// ("registry host" -> ["mirror host[:port]", ...]).
func WithMirrors(m map[string][]string) Option { return func(s *Snapshotter) { s.mirrors = m } }

// WithNodeBuild sets the node's Windows build ("10.0.20348.2340"); artifacts
// built on a newer build are not used. Empty accepts any.
func WithNodeBuild(b string) Option { return func(s *Snapshotter) { s.nodeBuild = b } }

// WithFormats sets the CIM formats the inner snapshotter mounts (default
// forked, what containerd's cimfs snapshotter uses).
func WithFormats(f ...string) Option { return func(s *Snapshotter) { s.formats = f } }

// WithTimeout bounds the fast path of one layer.
func WithTimeout(d time.Duration) Option { return func(s *Snapshotter) { s.timeout = d } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(s *Snapshotter) { s.log = l } }

// WithMetrics sets the collectors.
func WithMetrics(m *metrics.Snapshotter) Option { return func(s *Snapshotter) { s.metrics = m } }

// WithResolveCache sets how long an artifact lookup for a manifest is reused
// by the manifest's other layers: positive after success, negative after a
// failure (so a down registry costs one timeout per image, not per layer).
func WithResolveCache(positive, negative time.Duration) Option {
	return func(s *Snapshotter) { s.positiveTTL, s.negativeTTL = positive, negative }
}

// New wraps inner, a cimfs snapshotter rooted at root (NewCimFS).
func New(inner snapshots.Snapshotter, root string, opts ...Option) (*Snapshotter, error) {
	s := &Snapshotter{
		Snapshotter: inner,
		root:        root,
		resolver:    &resolver{formats: []string{builder.FormatForked}},
		timeout:     DefaultTimeout,
		log:         zap.NewNop(),
		positiveTTL: 5 * time.Minute,
		negativeTTL: 30 * time.Second,
		now:         time.Now,
		results:     map[string]resolveResult{},
	}
	s.resolveFn = s.resolve
	for _, o := range opts {
		o(s)
	}
	if s.reg == nil {
		c, err := registry.New(registry.WithKeychain(anonymous{}))
		if err != nil {
			return nil, err
		}
		s.reg = c
	}
	for _, d := range []string{stagingDir(root), cacheDir(root)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// Staging left by a crash is garbage.
	if ents, err := os.ReadDir(stagingDir(root)); err == nil {
		for _, e := range ents {
			os.RemoveAll(filepath.Join(stagingDir(root), e.Name()))
		}
	}
	if s.verifier == nil {
		s.log.Warn("no artifact verifier configured: the fast path is off, every layer is imported by containerd (set --trust-unsigned or configure signature verification)")
	}
	return s, nil
}

func stagingDir(root string) string { return filepath.Join(root, "cimconv", "staging") }
func cacheDir(root string) string   { return filepath.Join(root, "cimconv", "cache") }

// Prepare runs the fast path for an extraction snapshot that names its layer
// (containerd.io/snapshot.ref and the cri.* labels). On success the layer is
// committed under its chainID and Prepare returns an error wrapping
// errdefs.ErrAlreadyExists, which containerd's unpacker takes as "skip this
// layer". Otherwise it is the inner snapshotter's Prepare.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	chainID := info.Labels[LabelSnapshotRef]
	if !strings.Contains(key, labelUnpackKeyPrefix) || chainID == "" {
		return s.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	start := s.now()
	source, err := s.safeFastPath(ctx, key, parent, chainID, info.Labels, opts)
	d := s.now().Sub(start)
	if err == nil {
		s.metrics.Hit(source, d)
		s.log.Info("layer placed from a pre-built CIM", zap.String("chainID", chainID), zap.String("source", source),
			zap.String("image", info.Labels[LabelImageRef]), zap.Duration("took", d))
		return nil, fmt.Errorf("cimconv: layer %s committed from a pre-built CIM: %w", chainID, errdefs.ErrAlreadyExists)
	}
	ft := &fallThrough{reason: ReasonInternal, err: err}
	errors.As(err, &ft)
	s.metrics.FallThrough(ft.reason, d)
	s.log.Info("layer falls through to containerd's import", zap.String("chainID", chainID), zap.String("reason", ft.reason),
		zap.String("image", info.Labels[LabelImageRef]), zap.Error(ft.err))
	return s.Snapshotter.Prepare(ctx, key, parent, opts...)
}

// safeFastPath turns a panic into a fall-through: the fast path must never
// fail a pull.
func (s *Snapshotter) safeFastPath(ctx context.Context, key, parent, chainID string, labels map[string]string, opts []snapshots.Opt) (source string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fall(ReasonInternal, "panic in the fast path: %v", r)
		}
	}()
	return s.fastPath(ctx, key, parent, chainID, labels, opts)
}

func (s *Snapshotter) fastPath(ctx context.Context, key, parent, chainID string, labels map[string]string, opts []snapshots.Opt) (string, error) {
	unlock := s.locks.Lock(chainID)
	defer unlock()
	// Committed meanwhile (a concurrent pull of the same layer, another
	// namespace, a restart)?
	if st, err := s.Snapshotter.Stat(ctx, chainID); err == nil && st.Kind == snapshots.KindCommitted && st.Parent == parent && st.Labels[LabelRegionSet] != "" {
		return "existing", nil
	}
	if s.verifier == nil {
		return "", fall(ReasonUntrusted, "no artifact verifier configured (signature verification or --trust-unsigned)")
	}
	fctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var pinfo *snapshots.Info
	if parent != "" {
		pi, err := s.Snapshotter.Stat(fctx, parent)
		if err != nil {
			return "", fall(ReasonInternal, "parent snapshot %s: %v", parent, err)
		}
		pinfo = &pi
	}

	imageRef, manifest, layerDigest := labels[LabelImageRef], labels[LabelManifestDigest], labels[LabelLayerDigest]
	hasLabels := imageRef != "" && manifest != "" && layerDigest != ""

	// A layer warmed by `converter fetch --root` needs no registry, if it
	// passes this snapshotter's checks now: it may have been warmed under
	// another policy.
	cached, isCached := loadCacheEntry(s.root, chainID)
	if isCached {
		if err := s.cacheUsable(cached); err != nil {
			if !hasLabels {
				return "", err
			}
			// The registry path verifies the artifact under this policy:
			// still better than an import.
			s.log.Info("cached layer not used, trying the registry", zap.String("chainID", chainID), zap.Error(err))
		} else {
			if err := checkParent(pinfo, cached.ParentChainID, cached.ParentRegionSet); err != nil {
				return "", err
			}
			err := s.place(ctx, key, parent, chainID, cached.dir, cached.Layer, labels, cached.provenance(), opts)
			// The entry leaves the cache whether placing worked or not.
			// Placing moves its files out and a failure removes what was
			// moved, so the entry is no longer whole; and a failure of its
			// own (a CIM that does not open) would come back at every pull.
			// Moving the files back could fail halfway too. Without the
			// entry the next pull takes the registry path, which verifies
			// again, or `converter fetch --root` warms the layer again.
			if rerr := os.RemoveAll(cached.dir); rerr != nil {
				s.log.Warn("removing a used cache entry", zap.String("chainID", chainID), zap.Error(rerr))
			}
			if err != nil {
				return "", err
			}
			return "cache", nil
		}
	}

	if !hasLabels {
		return "", fall(ReasonNoLabels, "extraction snapshot has no %s/%s/%s labels", LabelImageRef, LabelManifestDigest, LabelLayerDigest)
	}
	r, err := s.resolveShared(fctx, imageRef, manifest)
	if err != nil {
		return "", classify(fctx, err)
	}
	i, err := r.layerIndex(layerDigest, chainID)
	if err != nil {
		return "", err
	}
	lc := r.cfg.Layers[i]
	var wantChain, wantRS string
	if i > 0 {
		wantChain, wantRS = r.chainIDs[i-1], RegionSet(r.cfg.Layers[i-1])
	}
	if err := checkParent(pinfo, wantChain, wantRS); err != nil {
		return "", err
	}
	stage, err := os.MkdirTemp(stagingDir(s.root), chainHex(chainID)[:12]+"-")
	if err != nil {
		return "", fall(ReasonInternal, "%v", err)
	}
	defer os.RemoveAll(stage)
	if err := s.download(fctx, r, i, stage); err != nil {
		return "", classify(fctx, err)
	}
	prov := provenance{RegionSet: RegionSet(lc), Builder: r.cfg.Builder, WindowsBuild: r.cfg.WindowsBuild, Format: r.cfg.Format, Artifact: r.artifact.Digest.String()}
	if err := s.place(ctx, key, parent, chainID, stage, lc, labels, prov, opts); err != nil {
		return "", err
	}
	if isCached {
		// The layer is placed: the cache entry this snapshotter would not
		// use has nothing left to serve.
		os.RemoveAll(cached.dir)
	}
	return "registry", nil
}

// download fetches layer i's blob and unpacks it into stage/cim and
// stage/side, checking the blob's digest and that it holds exactly the files
// the artifact config lists.
func (s *Snapshotter) download(ctx context.Context, r *resolved, i int, stage string) error {
	rc, err := s.reg.FetchBlob(ctx, r.subject.Context(), r.blobs[i])
	if err != nil {
		return err
	}
	// Downloaded bytes count as they pass (every 4 MiB) and the rest on Close.
	cr := readcount.New(rc, 4<<20, func(_, delta int64) { s.metrics.AddBytes(delta) })
	defer cr.Close()
	lc := r.cfg.Layers[i]
	if _, err := artifact.Unpack(cr, filepath.Join(stage, "cim"), filepath.Join(stage, "side"), &lc); err != nil {
		if isRegistryErr(err) || ctx.Err() != nil {
			return err
		}
		// A corrupt stream (zstd CRC, tar framing) is a bad blob, whatever
		// layer of the decoder noticed it first.
		return &fallThrough{reason: ReasonDigest, err: fmt.Errorf("artifact blob %s: %w", r.blobs[i].Digest, err)}
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return err
	}
	return cr.Close()
}

// provenance is what the fast path records on a committed snapshot.
type provenance struct {
	RegionSet    string `json:"regionSet"`
	Builder      string `json:"builder"`
	WindowsBuild string `json:"windowsBuild,omitempty"`
	Format       string `json:"format"`
	Artifact     string `json:"artifact"`
}

func (p provenance) labels() map[string]string {
	l := map[string]string{LabelRegionSet: p.RegionSet, LabelBuilder: p.Builder, LabelFormat: p.Format, LabelArtifact: p.Artifact}
	if p.WindowsBuild != "" {
		l[LabelWindowsBuild] = p.WindowsBuild
	}
	return l
}

// checkParent: a forked CIM references its parent's region files by GUID, so
// the parent snapshot must be the layer (chainID) and the region set the CIM
// was forked from. A parent imported by containerd has no region-set label.
func checkParent(parent *snapshots.Info, wantChain, wantRS string) error {
	switch {
	case wantChain == "" && parent == nil:
		return nil
	case wantChain == "":
		return fall(ReasonBinding, "the artifact's layer is a base layer, containerd gave parent %s", parent.Name)
	case parent == nil:
		return fall(ReasonBinding, "the artifact's layer has parent %s, containerd gave none", wantChain)
	case parent.Labels[LabelSnapshotRef] != "" && parent.Labels[LabelSnapshotRef] != wantChain:
		return fall(ReasonBinding, "parent snapshot is layer %s, the CIM was built on %s", parent.Labels[LabelSnapshotRef], wantChain)
	case parent.Labels[LabelRegionSet] == "":
		return fall(ReasonParent, "parent snapshot %s was imported by containerd, not placed from region set %s the CIM was forked from", parent.Name, wantRS)
	case parent.Labels[LabelRegionSet] != wantRS:
		return fall(ReasonParent, "parent snapshot %s holds region set %s, the CIM was forked from %s", parent.Name, parent.Labels[LabelRegionSet], wantRS)
	}
	return nil
}

// place prepares the extraction snapshot, moves the layer's files where
// containerd's cimfs differ would have written them (the .cim at the mount's
// cimpath, region and objectid files beside it, side files in the snapshot's
// directory), checks the CIM opens, and commits it under chainID with the
// provenance labels. On failure nothing of it is left.
func (s *Snapshotter) place(ctx context.Context, key, parent, chainID, stage string, lc artifact.LayerConfig, labels map[string]string, prov provenance, opts []snapshots.Opt) (err error) {
	mounts, err := s.Snapshotter.Prepare(ctx, key, parent, opts...)
	if err != nil {
		return fall(ReasonInternal, "prepare %s: %v", key, err)
	}
	var placed []string
	defer func() {
		if err == nil {
			return
		}
		for i := len(placed) - 1; i >= 0; i-- {
			os.Remove(placed[i])
		}
		if rerr := s.Snapshotter.Remove(ctx, key); rerr != nil {
			s.log.Warn("removing the fast path's snapshot", zap.String("key", key), zap.Error(rerr))
		}
	}()
	m, err := ParseCimFSMount(mounts)
	if err != nil {
		return fall(ReasonInternal, "%v", err)
	}
	cimDir := filepath.Dir(m.CimPath)
	move := func(src, dst string) error {
		if _, err := os.Lstat(dst); err == nil {
			return fall(ReasonConflict, "%s already exists", dst)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fall(ReasonInternal, "%v", err)
		}
		if err := os.Rename(src, dst); err != nil {
			if err := builder.LinkOrCopy(src, dst); err != nil {
				return fall(ReasonInternal, "placing %s: %v", dst, err)
			}
		}
		placed = append(placed, dst)
		return nil
	}
	for _, f := range lc.CimFiles {
		dst := filepath.Join(cimDir, f)
		if f == lc.Cim {
			dst = m.CimPath
		}
		if err := move(filepath.Join(stage, "cim", f), dst); err != nil {
			return err
		}
	}
	for _, f := range lc.SideFiles {
		if err := move(filepath.Join(stage, "side", filepath.FromSlash(f)), filepath.Join(m.Source, filepath.FromSlash(f))); err != nil {
			return err
		}
	}
	im, err := cim.Open(m.CimPath)
	if err != nil {
		return fall(ReasonDigest, "placed CIM does not open: %v", err)
	}
	im.Close()
	cl := maps.Clone(labels)
	if cl == nil {
		cl = map[string]string{}
	}
	cl[LabelSnapshotRef] = chainID
	maps.Copy(cl, prov.labels())
	if err := s.Snapshotter.Commit(ctx, chainID, key, snapshots.WithLabels(cl)); err != nil {
		return fall(ReasonInternal, "commit %s: %v", chainID, err)
	}
	return nil
}

// safeResolve is resolve with a panic turned into an internal fall-through:
// it runs inside singleflight, which re-raises a panic on a goroutine of its
// own, out of safeFastPath's reach, and would end the snapshotter.
func (s *Snapshotter) safeResolve(ctx context.Context, imageRef, manifest string) (r *resolved, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fall(ReasonInternal, "panic resolving the artifact of %s: %v", imageRef, p)
		}
	}()
	return s.resolveFn(ctx, imageRef, manifest)
}

// resolveShared resolves a manifest's artifact once for all its layers.
func (s *Snapshotter) resolveShared(ctx context.Context, imageRef, manifest string) (*resolved, error) {
	key := imageRef + "|" + manifest
	s.mu.Lock()
	if e, ok := s.results[key]; ok && s.now().Before(e.expires) {
		s.mu.Unlock()
		return e.r, e.err
	}
	s.mu.Unlock()
	ch := s.sf.DoChan(key, func() (any, error) {
		// The lookup serves every layer of the manifest, so the caller
		// that started it must not end it for the others by going away
		// (its result would be cached as the image's answer): it runs
		// detached, bounded by the fast-path timeout.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		defer cancel()
		r, err := s.safeResolve(rctx, imageRef, manifest)
		ttl := s.positiveTTL
		if err != nil {
			ttl = s.negativeTTL
		}
		now := s.now()
		s.mu.Lock()
		// Expired answers go as new ones come, or a node that pulls many
		// images keeps one per manifest it ever resolved.
		for k, e := range s.results {
			if !now.Before(e.expires) {
				delete(s.results, k)
			}
		}
		s.results[key] = resolveResult{r: r, err: err, expires: now.Add(ttl)}
		s.mu.Unlock()
		return r, err
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*resolved), nil
	}
}
