package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/trust/keys"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
	"github.com/cimconv/cimconv/internal/trust/trusttest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func TestCheckParent(t *testing.T) {
	parent := func(ref, rs string) *snapshots.Info {
		return &snapshots.Info{Name: "p", Labels: map[string]string{LabelSnapshotRef: ref, LabelRegionSet: rs}}
	}
	cases := []struct {
		name      string
		parent    *snapshots.Info
		wantChain string
		wantRS    string
		reason    string // "" = allowed
	}{
		{"base, no parent", nil, "", "", ""},
		{"base given a parent", parent("sha256:a", "g"), "", "", ReasonBinding},
		{"child without parent", nil, "sha256:a", "g", ReasonBinding},
		{"parent is another layer", parent("sha256:b", "g"), "sha256:a", "g", ReasonBinding},
		{"parent imported by containerd", parent("sha256:a", ""), "sha256:a", "g", ReasonParent},
		{"parent from another build", parent("sha256:a", "h"), "sha256:a", "g", ReasonParent},
		{"parent the child was forked from", parent("sha256:a", "g"), "sha256:a", "g", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkParent(tc.parent, tc.wantChain, tc.wantRS)
			var ft *fallThrough
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("checkParent = %v, want allowed", err)
			case tc.reason != "" && (!errors.As(err, &ft) || ft.reason != tc.reason):
				t.Fatalf("checkParent = %v, want reason %s", err, tc.reason)
			}
		})
	}
}

// TestLayerIndex: containerd names a layer by blob digest and chainID. A
// manifest may list one blob twice (positions 0 and 2 here, with different
// chainIDs); the position asked for is the one whose chainID matches, not
// the first holding the digest (which made the second a binding failure).
func TestLayerIndex(t *testing.T) {
	r := &resolved{
		layers:   []string{"sha256:L", "sha256:M", "sha256:L"},
		chainIDs: []string{"sha256:c0", "sha256:c1", "sha256:c2"},
	}
	cases := []struct {
		name           string
		layer, chainID string
		want           int // -1: a binding fall-through
	}{
		{"first of a duplicated blob", "sha256:L", "sha256:c0", 0},
		{"second of a duplicated blob", "sha256:L", "sha256:c2", 2},
		{"single blob", "sha256:M", "sha256:c1", 1},
		{"duplicated blob, chainID of neither position", "sha256:L", "sha256:c1", -1},
		{"blob not in the manifest", "sha256:N", "sha256:c0", -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			i, err := r.layerIndex(tc.layer, tc.chainID)
			var ft *fallThrough
			switch {
			case tc.want >= 0 && (err != nil || i != tc.want):
				t.Fatalf("layerIndex(%s, %s) = %d, %v; want %d", tc.layer, tc.chainID, i, err, tc.want)
			case tc.want < 0 && (!errors.As(err, &ft) || ft.reason != ReasonBinding):
				t.Fatalf("layerIndex(%s, %s) = %d, %v; want a %s fall-through", tc.layer, tc.chainID, i, err, ReasonBinding)
			}
		})
	}
}

func TestRegionSet(t *testing.T) {
	lc := artifact.LayerConfig{CimFiles: []string{"a.cim", "objectid_1234-ab_0", "region_1234-ab_0", "region_1234-ab_1"}}
	if got := RegionSet(lc); got != "1234-ab" {
		t.Fatalf("RegionSet = %q", got)
	}
	if got := RegionSet(artifact.LayerConfig{CimFiles: []string{"a.cim"}}); got != "" {
		t.Fatalf("RegionSet without region files = %q", got)
	}
}

func TestMountShape(t *testing.T) {
	ms := cimfsMounts("/r", "3", []string{"2", "1"}, false)
	m, err := ParseCimFSMount(ms)
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != "/r/snapshots/3" || m.CimPath != "/r/snapshots/cim-layers/3.cim" || m.ReadOnly ||
		len(m.ParentPaths) != 2 || m.ParentPaths[0] != "/r/snapshots/2" || m.ParentCimPaths[1] != "/r/snapshots/cim-layers/1.cim" {
		t.Fatalf("parsed %+v from %+v", m, ms)
	}
	if ms[0].Options[0] != "rw" {
		t.Fatalf("options %v", ms[0].Options)
	}
	if _, err := ParseCimFSMount(nil); err == nil {
		t.Fatal("no mounts parsed")
	}
}

// newStandIn returns a Snapshotter around a cimfs stand-in in a temp dir.
func newStandIn(t *testing.T, opts ...Option) *Snapshotter {
	t.Helper()
	root := t.TempDir()
	inner, err := NewCimFS(root)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(inner, root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Layers the fast path cannot serve go to containerd's normal path (the
// inner snapshotter's writable extraction snapshot), counted by reason:
// without a verifier the fast path never runs. A panic while resolving
// the artifact runs on singleflight's goroutine, which re-raises it out of
// safeFastPath's reach: it must be a fall-through too, not the end of the
// snapshotter.
func TestFallsThrough(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []Option
		resolve func(context.Context, string, string) (*resolved, error)
		reason  string
	}{
		{name: "no verifier", reason: "untrusted"},
		{name: "resolver panics", opts: []Option{WithVerifier(trust.AllowUnsigned())},
			resolve: func(context.Context, string, string) (*resolved, error) { panic("resolver bug") }, reason: "internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s := newStandIn(t, append(tc.opts, WithMetrics(metrics.NewSnapshotter(reg)))...)
			if tc.resolve != nil {
				s.resolveFn = tc.resolve
			}
			labels := map[string]string{LabelSnapshotRef: "sha256:" + hex64, LabelImageRef: "127.0.0.1:1/x:y", LabelManifestDigest: "sha256:" + hex64, LabelLayerDigest: "sha256:" + hex64}
			ms, err := s.Prepare(context.Background(), "extract-1 sha256:"+hex64, "", snapshots.WithLabels(labels))
			if err != nil {
				t.Fatalf("Prepare = %v, want the normal path", err)
			}
			if pm, err := ParseCimFSMount(ms); err != nil || pm.ReadOnly {
				t.Fatalf("mounts %+v (%v): want a writable CimFS extraction snapshot", ms, err)
			}
			want := `
# HELP cimconv_snapshotter_fallthrough_total Layers handed back to containerd's normal fetch and import, by reason.
# TYPE cimconv_snapshotter_fallthrough_total counter
cimconv_snapshotter_fallthrough_total{reason="` + tc.reason + `"} 1
`
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), metrics.SnapshotterFallThroughTotal); err != nil {
				t.Fatal(err)
			}
		})
	}
}

const hex64 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// testImage is a converted 2-layer windows/amd64 image in a loopback registry.
type testImage struct {
	host     string
	ref      string
	manifest string   // the image manifest's digest
	layers   []string // layer digests, base first
	chainIDs []string
}

// convertedImage pushes a 2-layer image to a new registry (its handler
// wrapped by mw, if not nil) and converts it with copts.
func convertedImage(t *testing.T, reg *registry.Client, mw func(http.Handler) http.Handler, copts ...convert.Option) testImage {
	t.Helper()
	var ropts []registrytest.Opt
	if mw != nil {
		ropts = append(ropts, registrytest.WithMiddleware(mw))
	}
	img := testImage{host: registrytest.NewReferrersRegistry(t, ropts...)}
	img.ref = img.host + "/win/app:1"
	var layers [][]byte
	for _, l := range fixture.Chain(2) {
		layers = append(layers, l.Bytes(fixture.Gzip))
	}
	p := v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"}
	registrytest.PushImage(t, img.ref, layers, p)
	cache, err := convert.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := convert.New(reg, portable.New(), cache, append(copts, convert.WithWorkDir(t.TempDir()))...).Convert(ctx, convert.Request{Image: img.ref}); err != nil {
		t.Fatal(err)
	}
	ts, err := reg.Resolve(ctx, img.ref, p, registry.OSVersionPolicy{Mode: "all"})
	if err != nil {
		t.Fatal(err)
	}
	img.manifest = ts[0].Descriptor.Digest.String()
	parent := ""
	for _, l := range ts[0].Layers {
		parent = builder.ChainID(parent, l.DiffID.String())
		img.layers = append(img.layers, l.Digest.String())
		img.chainIDs = append(img.chainIDs, parent)
	}
	return img
}

func signerOf(t *testing.T, k *trusttest.Key) convert.Option {
	t.Helper()
	s, err := sigstore.NewSigner(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	return convert.WithSigner(s)
}

func verifierOf(t *testing.T, reg *registry.Client, k *trusttest.Key) trust.Verifier {
	t.Helper()
	v, err := sigstore.NewVerifier(reg, []*keys.PublicKey{k.Public()})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestWarmRefusesJunkCandidates: `converter fetch --root` (Warm) runs the
// fast path's artifact search. Newer planted artifacts, one whose only
// signature referrer gives its bundle a wrong size and one whose manifest
// the registry does not have, each cost a refusal and the genuine signed
// artifact is cached; before, the first of them ended the search.
func TestWarmRefusesJunkCandidates(t *testing.T) {
	ctx := context.Background()
	var faults registrytest.Faults
	reg, err := registry.New(registry.WithRetry(registry.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	worker := trusttest.NewKey(t, t.TempDir(), "worker")
	img := convertedImage(t, reg, faults.Middleware, signerOf(t, worker))
	v := verifierOf(t, reg, worker)
	before, err := Warm(ctx, reg, img.ref, WarmOptions{Root: t.TempDir(), Verifier: v})
	if err != nil {
		t.Fatalf("warm before any junk: %v", err)
	}
	subject, err := name.NewDigest(img.host+"/win/app@"+img.manifest, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := reg.FetchManifest(ctx, subject.Context().Digest(before.Artifact))
	if err != nil {
		t.Fatal(err)
	}
	newer := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	plant := func(label string) v1.Descriptor {
		return trusttest.PutCopy(t, img.host, subject.RepositoryStr(), raw, func(m map[string]any) {
			trusttest.Annotate(m, artifact.AnnotationCreated, newer)
			trusttest.Annotate(m, "junk", label)
		})
	}
	trusttest.PushJunkSignature(t, reg, subject.Context(), plant("junk signature"), []byte(`{"not":"a bundle"}`), true, func(d *v1.Descriptor) { d.Size++ })
	faults.Set("/manifests/"+plant("missing").Digest.String(), http.StatusNotFound)

	res, err := Warm(ctx, reg, img.ref, WarmOptions{Root: t.TempDir(), Verifier: v})
	if err != nil {
		t.Fatalf("warm behind 2 junk artifacts = %v; want the genuine artifact %s", err, before.Artifact)
	}
	if res.Artifact != before.Artifact || len(res.Cached) != 2 {
		t.Fatalf("warm cached %v from %s; want both layers from %s", res.Cached, res.Artifact, before.Artifact)
	}
}

// TestCacheHonoursPolicy: a layer cached by `converter fetch --root` (Warm)
// is placed only if it passes the snapshotter's own checks now: Warm may
// have run under another policy. An entry recorded under --trust-unsigned is
// placed only by a snapshotter that allows unsigned artifacts, one signed by
// a key only while the snapshotter trusts that key, and only CIMs of a
// format and Windows build the node uses. Before, any entry was placed. A
// refused entry falls through (without the cri.* labels) or leaves the
// layer to the registry path, which verifies under the snapshotter's policy.
func TestCacheHonoursPolicy(t *testing.T) {
	reg, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	worker, other := trusttest.NewKey(t, dir, "worker"), trusttest.NewKey(t, dir, "other")
	img := convertedImage(t, reg, nil, signerOf(t, worker))
	unsigned, byWorker, byOther := trust.AllowUnsigned(), verifierOf(t, reg, worker), verifierOf(t, reg, other)
	cases := []struct {
		name   string
		warm   trust.Verifier    // converter fetch --root's policy
		edit   func(*cacheEntry) // then changes the entry (may be nil)
		snap   trust.Verifier    // the snapshotter's policy
		opts   []Option
		labels bool   // the cri.* labels are given: the registry path is open
		want   string // the fast path's source, or the fall-through reason
		kept   bool   // the cache entry is still there afterwards
	}{
		{name: "unsigned entry, snapshotter allows unsigned", warm: unsigned, snap: unsigned, want: "cache"},
		{name: "signed entry, snapshotter allows unsigned", warm: byWorker, snap: unsigned, want: "cache"},
		{name: "signed entry, key trusted", warm: byWorker, snap: byWorker, want: "cache"},
		{name: "unsigned entry, snapshotter trusts a key", warm: unsigned, snap: byWorker, want: ReasonUntrusted, kept: true},
		{name: "unsigned entry, snapshotter trusts a key, registry path open", warm: unsigned, snap: byWorker, labels: true, want: "registry"},
		{name: "signed entry, key no longer trusted", warm: byWorker, snap: byOther, want: ReasonUntrusted, kept: true},
		{name: "signed entry, key no longer trusted, registry path open", warm: byWorker, snap: byOther, labels: true, want: ReasonUntrusted, kept: true},
		{name: "another CIM format", warm: unsigned, snap: unsigned, opts: []Option{WithFormats("block")}, want: ReasonIncompatible, kept: true},
		{name: "built on a newer Windows build", warm: unsigned, edit: func(e *cacheEntry) { e.Provenance.WindowsBuild = "10.0.26100.1" },
			snap: unsigned, opts: []Option{WithNodeBuild("10.0.20348.2340")}, want: ReasonIncompatible, kept: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			root := t.TempDir()
			if _, err := Warm(ctx, reg, img.ref, WarmOptions{Root: root, Verifier: tc.warm}); err != nil {
				t.Fatal(err)
			}
			base := img.chainIDs[0]
			if tc.edit != nil {
				rewriteEntry(t, root, base, tc.edit)
			}
			inner, err := NewCimFS(root)
			if err != nil {
				t.Fatal(err)
			}
			preg := prometheus.NewRegistry()
			opts := append([]Option{WithRegistry(reg), WithVerifier(tc.snap), WithMetrics(metrics.NewSnapshotter(preg)), WithLogger(zaptest.NewLogger(t))}, tc.opts...)
			s, err := New(inner, root, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			labels := map[string]string{LabelSnapshotRef: base}
			if tc.labels {
				labels[LabelImageRef], labels[LabelManifestDigest], labels[LabelLayerDigest] = img.ref, img.manifest, img.layers[0]
			}
			_, err = s.Prepare(ctx, "default/1/extract-1 "+base, "", snapshots.WithLabels(labels))
			got := outcome(t, preg)
			if got != tc.want {
				t.Fatalf("Prepare = %v (outcome %s); want %s", err, got, tc.want)
			}
			if placed := errdefs.IsAlreadyExists(err); placed != (tc.want == "cache" || tc.want == "registry") {
				t.Fatalf("Prepare = %v with outcome %s", err, got)
			}
			if _, kept := loadCacheEntry(root, base); kept != tc.kept {
				t.Fatalf("cache entry kept = %v after %s; want %v", kept, got, tc.kept)
			}
		})
	}
}

// rewriteEntry changes the cache entry of chainID under root.
func rewriteEntry(t *testing.T, root, chainID string, edit func(*cacheEntry)) {
	t.Helper()
	e, ok := loadCacheEntry(root, chainID)
	if !ok {
		t.Fatalf("no cache entry for %s", chainID)
	}
	edit(e)
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, entryFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// outcome is what the snapshotter's metrics say of the one layer it saw:
// the fast path's source or the fall-through reason.
func outcome(t *testing.T, preg *prometheus.Registry) string {
	t.Helper()
	out := outcomes(t, preg)
	if len(out) != 1 {
		t.Fatalf("metrics count %v; want one layer", out)
	}
	for o := range out {
		return o
	}
	return ""
}

// outcomes counts the layers the snapshotter's metrics record, by fast-path
// source and fall-through reason.
func outcomes(t *testing.T, preg *prometheus.Registry) map[string]int {
	t.Helper()
	mfs, err := preg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, mf := range mfs {
		if mf.GetName() != metrics.SnapshotterFastPathTotal && mf.GetName() != metrics.SnapshotterFallThroughTotal {
			continue
		}
		for _, m := range mf.GetMetric() {
			if n := int(m.GetCounter().GetValue()); n > 0 {
				out[m.GetLabel()[0].GetValue()] += n
			}
		}
	}
	return out
}

// TestWarmReplacesEntryOfAnotherPolicy: warming again under a policy that
// does not accept the cached entries (here: trusted keys after
// --trust-unsigned) replaces them with what this verifier established,
// instead of reporting them present and leaving the cache unusable to a
// snapshotter with the same policy.
func TestWarmReplacesEntryOfAnotherPolicy(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	worker := trusttest.NewKey(t, t.TempDir(), "worker")
	img := convertedImage(t, reg, nil, signerOf(t, worker))
	byWorker := verifierOf(t, reg, worker)
	root := t.TempDir()
	if _, err := Warm(ctx, reg, img.ref, WarmOptions{Root: root, Verifier: trust.AllowUnsigned()}); err != nil {
		t.Fatal(err)
	}
	res, err := Warm(ctx, reg, img.ref, WarmOptions{Root: root, Verifier: byWorker})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cached) != 2 || len(res.Present) != 0 {
		t.Fatalf("warm with a trusted key over unsigned entries: cached %v, present %v; want both layers cached again", res.Cached, res.Present)
	}
	for _, c := range img.chainIDs {
		e, ok := loadCacheEntry(root, c)
		if !ok || e.Trust == nil || !e.Trust.Signed || e.Trust.KeyID != worker.Public().ID {
			t.Fatalf("entry %s after warming with key %s: %+v", c, worker.Public().ID, e)
		}
	}
	res, err = Warm(ctx, reg, img.ref, WarmOptions{Root: root, Verifier: byWorker})
	if err != nil || len(res.Present) != 2 {
		t.Fatalf("warm again under the same policy: %+v, %v; want both layers present", res, err)
	}
	if ents, err := os.ReadDir(stagingDir(root)); err != nil || len(ents) != 0 {
		t.Fatalf("staging after warm: %v, %v; want empty", ents, err)
	}
}

// TestCacheEntryLeavesAfterFailedPlacement: when placing a cached layer
// fails (here its last region file collides with a stray file), the entry
// leaves the cache. Before, the cleanup deleted the files it had moved out
// of the entry and left entry.json: every later pull of the layer failed
// with reason internal, and `converter fetch --root` reported it present.
// Once the conflict is gone the layer takes the fast path again: from the
// registry when the cri.* labels are given, or from the cache warmed again.
func TestCacheEntryLeavesAfterFailedPlacement(t *testing.T) {
	reg, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	img := convertedImage(t, reg, nil)
	base := img.chainIDs[0]
	cases := []struct {
		name   string
		labels bool   // the cri.* labels are given
		rewarm bool   // converter fetch --root runs again after the conflict
		want   string // the fast path's source once the conflict is gone
	}{
		{name: "registry path open", labels: true, want: "registry"},
		{name: "warmed again", rewarm: true, want: "cache"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			root := t.TempDir()
			warm := func() *WarmResult {
				t.Helper()
				res, err := Warm(ctx, reg, img.ref, WarmOptions{Root: root, Verifier: trust.AllowUnsigned()})
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			warm()
			e, ok := loadCacheEntry(root, base)
			if !ok {
				t.Fatal("base layer not cached")
			}
			inner, err := NewCimFS(root)
			if err != nil {
				t.Fatal(err)
			}
			preg := prometheus.NewRegistry()
			s, err := New(inner, root, WithRegistry(reg), WithVerifier(trust.AllowUnsigned()),
				WithMetrics(metrics.NewSnapshotter(preg)), WithLogger(zaptest.NewLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// The last file placed, so the others have been moved out of
			// the entry when the conflict stops the placement.
			stray := filepath.Join(CimDir(root), e.Layer.CimFiles[len(e.Layer.CimFiles)-1])
			if err := os.MkdirAll(filepath.Dir(stray), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(stray, []byte("stray"), 0o644); err != nil {
				t.Fatal(err)
			}
			labels := map[string]string{LabelSnapshotRef: base}
			if tc.labels {
				labels[LabelImageRef], labels[LabelManifestDigest], labels[LabelLayerDigest] = img.ref, img.manifest, img.layers[0]
			}
			key := "default/1/extract-1 " + base
			if _, err := s.Prepare(ctx, key, "", snapshots.WithLabels(labels)); err != nil {
				t.Fatalf("first Prepare = %v; want a fall-through to the inner snapshotter", err)
			}
			if got := outcomes(t, preg); got[ReasonConflict] != 1 {
				t.Fatalf("first Prepare: %v; want a %s fall-through", got, ReasonConflict)
			}
			if _, err := os.Stat(e.dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cache entry %s after the failed placement: %v; want it removed", e.dir, err)
			}
			// containerd imports the layer, or gives up: the snapshot goes.
			if err := s.Remove(ctx, key); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(stray); err != nil {
				t.Fatal(err)
			}
			if tc.rewarm {
				if res := warm(); !slices.Contains(res.Cached, base) {
					t.Fatalf("warm again: cached %v, present %v; want %s cached again", res.Cached, res.Present, base)
				}
			}
			_, err = s.Prepare(ctx, "default/2/extract-2 "+base, "", snapshots.WithLabels(labels))
			if !errdefs.IsAlreadyExists(err) {
				t.Fatalf("Prepare once the conflict is gone = %v (%v); want the fast path", err, outcomes(t, preg))
			}
			if got := outcomes(t, preg); got[tc.want] != 1 {
				t.Fatalf("Prepare once the conflict is gone: %v; want the fast path from %s", got, tc.want)
			}
		})
	}
}

// Expired lookups leave the cache when new ones are stored, or a node keeps
// one per manifest it ever resolved.
func TestResolveCacheDropsExpiredAnswers(t *testing.T) {
	s := newStandIn(t, WithResolveCache(time.Minute, time.Minute))
	now := time.Unix(1_800_000_000, 0)
	s.now = func() time.Time { return now }
	calls := 0
	s.resolveFn = func(context.Context, string, string) (*resolved, error) {
		calls++
		return nil, errors.New("no artifact")
	}
	ctx := context.Background()
	for i := range 5 {
		if _, err := s.resolveShared(ctx, "127.0.0.1:1/x:y", "sha256:"+strings.Repeat(string(rune('a'+i)), 64)); err == nil {
			t.Fatal("want the resolver's error")
		}
		now = now.Add(2 * time.Minute) // past the answer's lifetime
	}
	if _, err := s.resolveShared(ctx, "127.0.0.1:1/x:y", "sha256:"+strings.Repeat("f", 64)); err == nil {
		t.Fatal("want the resolver's error")
	}
	s.mu.Lock()
	n := len(s.results)
	s.mu.Unlock()
	if calls != 6 || n != 1 {
		t.Fatalf("%d lookups, %d answers kept; want 6 lookups and only the live answer kept", calls, n)
	}
}
