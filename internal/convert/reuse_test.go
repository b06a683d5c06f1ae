package convert_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// variantBuilder is the portable builder as a worker configured otherwise
// reports it: another CIM format or Windows build, in its capabilities and
// in every layer it builds. It is not TwoPhase, so every layer goes through
// BuildLayer and carries the variant.
type variantBuilder struct {
	inner        *portable.Builder
	format       string
	windowsBuild string
}

func newVariant(format, windowsBuild string) variantBuilder {
	return variantBuilder{inner: portable.New(), format: format, windowsBuild: windowsBuild}
}

func (b variantBuilder) Capabilities() builder.Capabilities {
	c := b.inner.Capabilities()
	c.Formats = []string{builder.FormatForked, builder.FormatBlock}
	c.Format, c.WindowsBuild = b.format, b.windowsBuild
	return c
}

func (b variantBuilder) BuildLayer(ctx context.Context, l builder.LayerSource, parent *builder.BuiltLayer, dir string) (*builder.BuiltLayer, error) {
	bl, err := b.inner.BuildLayer(ctx, l, parent, dir)
	if bl != nil {
		bl.Format, bl.WindowsBuild = b.format, b.windowsBuild
	}
	return bl, err
}

// layerCounter is an Observer counting reused and built layers (also of a
// conversion that fails).
type layerCounter struct{ cached, built atomic.Int32 }

func (o *layerCounter) Stage(string, time.Duration, error) {}
func (o *layerCounter) Bytes(string, int64)                {}
func (o *layerCounter) Layer(cached bool) {
	if cached {
		o.cached.Add(1)
	} else {
		o.built.Add(1)
	}
}

// Where a second worker can find what a first worker built.
const (
	viaLocalCache  = "local cache"       // the same local chain cache (--force)
	viaSharedCache = "shared cache"      // an empty local cache and the shared one (--force)
	viaArtifact    = "existing artifact" // an empty cache; the pushed artifact
)

var reusePaths = []string{viaLocalCache, viaSharedCache, viaArtifact}

// secondWorker pushes an image of layers, converts it with first (which
// must succeed), then converts it with second, which can reuse first's work
// only through path. It returns both results, second's error and what
// second reused or built.
//
// First converts the image's base layer alone beforehand: a worker claims,
// and so stores in the shared cache, the layers up to the first one it
// builds, so this way every layer of the image is in the shared cache.
func secondWorker(t *testing.T, layers [][]byte, first, second builder.Builder, path string) (firstRes, res *convert.Result, err error, layers2 *layerCounter) {
	t.Helper()
	host := registrytest.NewReferrersRegistry(t)
	base, image := host+"/win/reuse:base", host+"/win/reuse:1"
	registrytest.PushImage(t, base, layers[:1], win(ltsc2022))
	registrytest.PushImage(t, image, layers, win(ltsc2022))
	reg := fetchtest.NewRegistry(t, registry.WithRetry(registry.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond}))
	newCache := func() *convert.Cache {
		c, err := convert.NewCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	shared := newMemShared()
	cache := newCache()
	conv := convert.New(reg, first, cache, convert.WithWorkDir(t.TempDir()), convert.WithSharedCache(shared))
	if _, err := conv.Convert(context.Background(), convert.Request{Image: base}); err != nil {
		t.Fatalf("first worker, base image: %v", err)
	}
	if firstRes, err = conv.Convert(context.Background(), convert.Request{Image: image}); err != nil {
		t.Fatalf("first worker: %v", err)
	}
	shared.mu.Lock()
	stored := len(shared.values)
	shared.mu.Unlock()
	if stored != len(layers) {
		t.Fatalf("first worker stored %d layers in the shared cache, want all %d", stored, len(layers))
	}

	layers2 = &layerCounter{}
	opts := []convert.Option{convert.WithWorkDir(t.TempDir()), convert.WithObserver(layers2)}
	req := convert.Request{Image: image, Force: true}
	switch path {
	case viaLocalCache:
	case viaSharedCache:
		cache = newCache()
		opts = append(opts, convert.WithSharedCache(shared))
	case viaArtifact:
		cache = newCache()
		req.Force = false
	default:
		t.Fatalf("unknown path %q", path)
	}
	res, err = convert.New(reg, second, cache, opts...).Convert(context.Background(), req)
	return firstRes, res, err, layers2
}

// A worker with --hive-merge=refuse never publishes a layer merged by the
// pure-Go hive merge, wherever it finds one: it refuses the app layer with
// ErrDeltaHives as it does on an empty cache, while it still reuses the base
// layer (no delta hives, so no merge) from the caches.
func TestRefusingWorkerNeverReusesMergedHives(t *testing.T) {
	chain := layersOf(fixture.Chain(2)) // base + an app layer with delta hives
	refuse := portable.New(portable.WithHiveMerge(portable.HiveMergeRefuse))
	for _, path := range reusePaths {
		t.Run(path, func(t *testing.T) {
			_, res, err, layers := secondWorker(t, chain, portable.New(), refuse, path)
			if !errors.Is(err, portable.ErrDeltaHives) {
				existing := err == nil && res.Images[0].Existing
				t.Fatalf("refusing worker: err = %v (existing artifact taken: %v, %d layers reused); want ErrDeltaHives: the merged layer is not its own",
					err, existing, layers.cached.Load())
			}
			wantCached := int32(1)
			if path == viaArtifact {
				wantCached = 0 // its cache is empty
			}
			if got := layers.cached.Load(); got != wantCached {
				t.Errorf("%d layers reused, want %d (the base layer, which has no delta hives)", got, wantCached)
			}
		})
	}
}

// A layer without delta hives is the same under --hive-merge=portable and
// refuse, so a refusing worker reuses such layers and artifacts that a
// merging worker built: the same artifact, nothing built.
func TestRefusingWorkerReusesLayersWithoutDeltaHives(t *testing.T) {
	app := fixture.NewLayer().File("Files/Program Files/App/app.exe", fixture.PE("app.exe", 8<<10))
	chain := layersOf([]*fixture.Layer{fixture.BaseLayer(), app})
	refuse := portable.New(portable.WithHiveMerge(portable.HiveMergeRefuse))
	for _, path := range reusePaths {
		t.Run(path, func(t *testing.T) {
			first, res, err, layers := secondWorker(t, chain, portable.New(), refuse, path)
			if err != nil {
				t.Fatal(err)
			}
			im := res.Images[0]
			if path == viaArtifact {
				if !im.Existing {
					t.Errorf("refusing worker did not reuse the existing artifact (no merged hives): %+v", im)
				}
				return
			}
			if got := layers.built.Load(); got != 0 {
				t.Errorf("refusing worker built %d layers, want 0 (none has delta hives)", got)
			}
			if im.Artifact != first.Images[0].Artifact {
				t.Errorf("artifact %s, want the merging worker's %s: same layers, same options", im.Artifact, first.Images[0].Artifact)
			}
		})
	}
}

// Layers and artifacts are reused only by a builder writing the same CIM
// format on the same Windows build: a block CIM cannot sit on a forked
// parent (hcsshim refuses it half-way), and an artifact names one Windows
// build for its whole chain, which nodes choose it by.
func TestReuseNeedsSameFormatAndWindowsBuild(t *testing.T) {
	chain := layersOf(fixture.Chain(2))
	tests := []struct {
		name          string
		first, second variantBuilder
		reuse         bool
	}{
		{"same format and build", newVariant(builder.FormatForked, ltsc2022), newVariant(builder.FormatForked, ltsc2022), true},
		{"block after forked", newVariant(builder.FormatForked, ""), newVariant(builder.FormatBlock, ""), false},
		{"forked after block", newVariant(builder.FormatBlock, ""), newVariant(builder.FormatForked, ""), false},
		{"other Windows build", newVariant(builder.FormatForked, ltsc2022), newVariant(builder.FormatForked, ltsc2025), false},
	}
	for _, tt := range tests {
		for _, path := range reusePaths {
			t.Run(tt.name+"/"+path, func(t *testing.T) {
				_, res, err, layers := secondWorker(t, chain, tt.first, tt.second, path)
				if err != nil {
					t.Fatal(err)
				}
				im := res.Images[0]
				reused := im.Existing || layers.cached.Load() == int32(len(chain))
				if reused != tt.reuse {
					t.Fatalf("reused = %v (existing %v, %d of %d layers cached), want %v; options %q after %q",
						reused, im.Existing, layers.cached.Load(), len(chain), tt.reuse,
						convert.New(nil, tt.second, nil).OptionsKey(), convert.New(nil, tt.first, nil).OptionsKey())
				}
				if !tt.reuse && layers.built.Load() != int32(len(chain)) {
					t.Errorf("%d of %d layers built, want all: none is this builder's", layers.built.Load(), len(chain))
				}
			})
		}
	}
}
