package snapshotter

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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

// TestUntrustedFallsThrough: without a verifier the fast path never runs;
// the layer gets the inner snapshotter's writable extraction snapshot.
func TestUntrustedFallsThrough(t *testing.T) {
	root := t.TempDir()
	inner, err := NewCimFS(root)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.NewSnapshotter(reg)
	s, err := New(inner, root, WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
cimconv_snapshotter_fallthrough_total{reason="untrusted"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), metrics.SnapshotterFallThroughTotal); err != nil {
		t.Fatal(err)
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
