package convert_test

import (
	"archive/tar"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/hive"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

const (
	ltsc2022 = "10.0.20348.2031"
	ltsc2025 = "10.0.26100.1742"
)

// registries are the two real registries every end-to-end test runs against.
var registries = []struct {
	name  string
	start func(t testing.TB, opts ...registrytest.Opt) string
}{
	{"ggcr-referrers", registrytest.NewReferrersRegistry},
	{"distribution-fallback", registrytest.NewDistribution},
}

func win(osv string) v1.Platform {
	return v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: osv}
}

func layersOf(ls []*fixture.Layer) [][]byte {
	comps := []fixture.Compression{fixture.Gzip, fixture.Zstd, fixture.Gzip}
	var out [][]byte
	for i, l := range ls {
		out = append(out, l.Bytes(comps[i%len(comps)]))
	}
	return out
}

type setup struct {
	reg   *registry.Client
	cache *convert.Cache
	conv  *convert.Converter
}

func newFixture(t *testing.T) *setup {
	t.Helper()
	reg := fetchtest.NewRegistry(t, registry.WithRetry(registry.RetryPolicy{MaxAttempts: 6, InitialDelay: 5 * time.Millisecond, MaxDelay: 50 * time.Millisecond}))
	cache, err := convert.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &setup{reg: reg, cache: cache, conv: convert.New(reg, portable.New(), cache, convert.WithWorkDir(t.TempDir()))}
}

func TestConvertIndexFetchAndRerun(t *testing.T) {
	for _, r := range registries {
		t.Run(r.name, func(t *testing.T) {
			host := r.start(t)
			f := newFixture(t)
			chain := layersOf(fixture.Chain(3))
			d22 := registrytest.PushImage(t, host+"/win/app:2022", chain, win(ltsc2022))
			d25 := registrytest.PushImage(t, host+"/win/app:2025", chain[:2], win(ltsc2025))
			registrytest.PushIndex(t, host+"/win/app:multi", d22, d25)

			res, err := f.conv.Convert(context.Background(), convert.Request{Image: host + "/win/app:multi"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Images) != 2 {
				t.Fatalf("converted %d images, want the 2 Windows manifests (not linux, not the attestation)", len(res.Images))
			}
			for _, im := range res.Images {
				if im.Existing || im.Artifact == "" {
					t.Fatalf("image %s: %+v", im.Subject, im)
				}
				refs := fetchtest.Artifacts(t, f.reg, im.Subject)
				if n := len(refs); n != 1 {
					t.Fatalf("%s has %d artifacts, want 1", im.Subject, n)
				}
				// Its app layers' delta hives were merged by the portable
				// builder, and the artifact says so.
				if a := refs[0].Annotations; a[artifact.AnnotationHiveMerge] != builder.HiveMergePortable || a[artifact.AnnotationExperimental] != "true" {
					t.Errorf("%s: artifact annotations %v, want %s=%s and experimental", im.Subject, a, artifact.AnnotationHiveMerge, builder.HiveMergePortable)
				}
			}
			// The 2025 image shares its two layers with the 2022 chain: they
			// were converted once.
			built := 0
			for _, im := range res.Images {
				for _, l := range im.Layers {
					if l.Built {
						built++
					}
				}
			}
			if built != 3 {
				t.Errorf("%d layers built, want 3 (shared chain reused)", built)
			}

			// Node side: a 2022 node gets the 2022 image's chain.
			fr := fetchtest.CheckFetched(t, f.reg, host+"/win/app:multi", "10.0.20348.2340", chain)
			if !strings.Contains(fr.Subject, d22.Digest.String()) {
				t.Errorf("2022 node fetched %s, want %s", fr.Subject, d22.Digest)
			}
			fetchtest.CheckFetched(t, f.reg, host+"/win/app:2025", "", chain[:2])

			// Idempotent: a re-run finds the artifacts and pushes nothing new.
			again, err := f.conv.Convert(context.Background(), convert.Request{Image: host + "/win/app:multi"})
			if err != nil {
				t.Fatal(err)
			}
			for i, im := range again.Images {
				if !im.Existing || im.Artifact != res.Images[i].Artifact {
					t.Fatalf("re-run: %+v, want the existing artifact %s", im, res.Images[i].Artifact)
				}
				if n := len(fetchtest.Artifacts(t, f.reg, im.Subject)); n != 1 {
					t.Fatalf("re-run left %d artifacts for %s", n, im.Subject)
				}
			}
		})
	}
}

func TestSecondImageOnSameBaseBuildsOnlyNewLayers(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	f := newFixture(t)
	base := fixture.BaseLayer().Bytes(fixture.Gzip)
	app1 := fixture.AppLayer(1).Bytes(fixture.Gzip)
	app2 := fixture.AppLayer(2).Bytes(fixture.Zstd)
	registrytest.PushImage(t, host+"/a/one:1", [][]byte{base, app1}, win(ltsc2022))
	registrytest.PushImage(t, host+"/b/two:1", [][]byte{base, app2}, win(ltsc2022))
	if _, err := f.conv.Convert(context.Background(), convert.Request{Image: host + "/a/one:1"}); err != nil {
		t.Fatal(err)
	}
	res, err := f.conv.Convert(context.Background(), convert.Request{Image: host + "/b/two:1"})
	if err != nil {
		t.Fatal(err)
	}
	ls := res.Images[0].Layers
	if ls[0].Built || !ls[1].Built {
		t.Fatalf("layers built = [%v %v], want [false true]", ls[0].Built, ls[1].Built)
	}
	fetchtest.CheckFetched(t, f.reg, host+"/b/two:1", "", [][]byte{base, app2})
}

func TestFlakyRegistry(t *testing.T) {
	// Every 3rd request fails with 503 once the image is in place.
	var flaky atomic.Bool
	var n atomic.Int64
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if flaky.Load() && n.Add(1)%3 == 0 {
				http.Error(w, "injected", http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(mw))
	f := newFixture(t)
	chain := layersOf(fixture.Chain(2))
	registrytest.PushImage(t, host+"/win/flaky:1", chain, win(ltsc2022))
	flaky.Store(true)
	if _, err := f.conv.Convert(context.Background(), convert.Request{Image: host + "/win/flaky:1"}); err != nil {
		t.Fatalf("convert against a registry failing every 3rd request: %v", err)
	}
	fetchtest.CheckFetched(t, f.reg, host+"/win/flaky:1", "", chain)
	if n.Load() < 9 {
		t.Fatalf("only %d requests went through the flaky registry", n.Load())
	}
}

func TestRefusalsPushNothing(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	base := fixture.BaseLayer().Bytes(fixture.Gzip)
	traversal := fixture.NewLayer().Raw(&tar.Header{Name: "Files/../../evil", Typeflag: tar.TypeReg, Size: 1}, []byte("x")).Bytes(fixture.Gzip)
	foreignURL := registrytest.ServeBlob(t, "foreign.tar.gz", base)

	tests := []struct {
		name  string
		push  func() v1.Descriptor
		ref   string
		check func(error) bool
	}{
		{"corrupt layer", func() v1.Descriptor {
			return registrytest.PushImage(t, host+"/bad/corrupt:1", [][]byte{base, traversal}, win(ltsc2022))
		}, host + "/bad/corrupt:1", func(err error) bool { return strings.Contains(err.Error(), "Files/../../evil") }},
		{"corrupt delta hive", func() v1.Descriptor {
			bad := fixture.NewLayer().Dir("Hives").File("Hives/Software_Delta", []byte("regf, but not a hive")).Bytes(fixture.Gzip)
			return registrytest.PushImage(t, host+"/bad/delta:1", [][]byte{base, bad}, win(ltsc2022))
		}, host + "/bad/delta:1", func(err error) bool {
			return errors.Is(err, hive.ErrCorrupt) && strings.Contains(err.Error(), "Hives/Software_Delta")
		}},
		{"foreign layer not allowlisted", func() v1.Descriptor {
			return registrytest.PushForeignLayerImage(t, host+"/bad/foreign:1", base, []string{foreignURL}, [][]byte{fixture.AppLayer(1).Bytes(fixture.Gzip)}, win(ltsc2022))
		}, host + "/bad/foreign:1", func(err error) bool { return errors.Is(err, registry.ErrForeignLayerRefused) }},
		{"linux image", func() v1.Descriptor {
			return registrytest.PushImage(t, host+"/bad/linux:1", [][]byte{registrytest.Tar(t, "etc/x", "y")}, v1.Platform{OS: "linux", Architecture: "amd64"})
		}, host + "/bad/linux:1", func(err error) bool { return errors.Is(err, registry.ErrNotWindows) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			d := tt.push()
			_, err := f.conv.Convert(context.Background(), convert.Request{Image: tt.ref})
			if err == nil || !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			repo, _ := name.ParseReference(tt.ref, name.Insecure)
			if n := len(fetchtest.Artifacts(t, f.reg, repo.Context().Digest(d.Digest.String()).String())); n != 0 {
				t.Fatalf("%d artifacts pushed after a failure", n)
			}
		})
	}
}

func TestOutputLayoutIsDeterministic(t *testing.T) {
	host := registrytest.NewDistribution(t)
	chain := layersOf(fixture.Chain(3))
	registrytest.PushImage(t, host+"/win/det:1", chain, win(ltsc2022))
	var digests []string
	for i := 0; i < 2; i++ {
		f := newFixture(t) // fresh cache: really built twice
		out := t.TempDir()
		res, err := f.conv.Convert(context.Background(), convert.Request{Image: host + "/win/det:1", OutputDir: out})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(out, "index.json")); err != nil {
			t.Fatalf("no OCI layout written: %v", err)
		}
		digests = append(digests, res.Images[0].Artifact)
		if n := len(fetchtest.Artifacts(t, f.reg, res.Images[0].Subject)); n != 0 {
			t.Fatalf("--output pushed %d artifacts", n)
		}
	}
	if digests[0] != digests[1] {
		t.Fatalf("two conversions gave %s and %s", digests[0], digests[1])
	}
}

func TestForceConvertsAgain(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	f := newFixture(t)
	chain := layersOf(fixture.Chain(2))
	registrytest.PushImage(t, host+"/win/force:1", chain, win(ltsc2022))
	first, err := f.conv.Convert(context.Background(), convert.Request{Image: host + "/win/force:1"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.conv.Convert(context.Background(), convert.Request{Image: host + "/win/force:1", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if second.Images[0].Existing {
		t.Fatal("--force reported the existing artifact")
	}
	// Deterministic builder, reused cache: the same artifact again.
	if second.Images[0].Artifact != first.Images[0].Artifact {
		t.Fatalf("forced conversion gave %s, want %s", second.Images[0].Artifact, first.Images[0].Artifact)
	}
}
