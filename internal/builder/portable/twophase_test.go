package portable

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/buildertest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// chainSources gives each layer its diffID and chainID, as the registry
// path knows them from the image config.
func chainSources(t testing.TB, layers [][]byte) []builder.LayerSource {
	t.Helper()
	var out []builder.LayerSource
	chain := ""
	for i, l := range layers {
		src := source(l, fmt.Sprintf("sha256:layer%d", i))
		src.DiffID = diffIDOf(t, l)
		chain = builder.ChainID(chain, src.DiffID)
		src.ChainID = chain
		out = append(out, src)
	}
	return out
}

func buildSequential(t testing.TB, dir string, srcs []builder.LayerSource) []*builder.BuiltLayer {
	t.Helper()
	var parent *builder.BuiltLayer
	var out []*builder.BuiltLayer
	for i, src := range srcs {
		bl, err := New().BuildLayer(context.Background(), src, parent, dir)
		if err != nil {
			t.Fatalf("BuildLayer %d: %v", i, err)
		}
		out = append(out, bl)
		parent = bl
	}
	return out
}

// buildTwoPhase prepares every layer concurrently, then finishes them in
// chain order.
func buildTwoPhase(t testing.TB, dir string, srcs []builder.LayerSource) []*builder.BuiltLayer {
	t.Helper()
	b := New()
	preps := make([]builder.Prepared, len(srcs))
	errs := make([]error, len(srcs))
	var wg sync.WaitGroup
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			preps[i], errs[i] = b.Prepare(context.Background(), src, i, dir)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	var parent *builder.BuiltLayer
	var out []*builder.BuiltLayer
	for i, p := range preps {
		bl, err := b.Finish(context.Background(), p, parent)
		if err != nil {
			t.Fatalf("Finish %d: %v", i, err)
		}
		if err := p.Discard(); err != nil {
			t.Fatalf("Discard after Finish: %v", err)
		}
		out = append(out, bl)
		parent = bl
	}
	return out
}

func TestTwoPhaseMatchesBuildLayer(t *testing.T) {
	layers := chainBytes(4) // gzip, zstd, plain, gzip
	srcs := chainSources(t, layers)
	seqDir, tpDir := t.TempDir(), t.TempDir()
	seq := buildSequential(t, seqDir, srcs)
	tp := buildTwoPhase(t, tpDir, srcs)

	want, got := dirFiles(t, seqDir), dirFiles(t, tpDir)
	if len(want) < 4*7 || len(got) != len(want) {
		t.Fatalf("file sets differ: BuildLayer %v, two-phase %v", keys(want), keys(got))
	}
	for name, b := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s missing from the two-phase build", name)
		} else if !bytes.Equal(b, g) {
			t.Errorf("%s differs from BuildLayer's (%d vs %d bytes)", name, len(b), len(g))
		}
	}
	if paths := allPaths(t, tpDir); strings.Contains(strings.Join(paths, "\n"), ".tmp-") {
		t.Errorf("temporary paths left: %v", paths)
	}

	for i := range tp {
		s, g := *seq[i], *tp[i]
		if g.CimDir != tpDir || (g.SideDir != "" && g.SideDir != builder.SideDir(tpDir, g.ChainID)) {
			t.Errorf("layer %d: dirs %s, %s", i, g.CimDir, g.SideDir)
		}
		if i > 0 && g.Parent != tp[i-1] {
			t.Errorf("layer %d: parent not linked", i)
		}
		s.CimDir, s.SideDir, s.Parent = "", "", nil
		g.CimDir, g.SideDir, g.Parent = "", "", nil
		if fmt.Sprint(s) != fmt.Sprint(g) {
			t.Errorf("layer %d: BuiltLayer\n%+v\nwant\n%+v", i, g, s)
		}

		view, cimView := chainViews(t, layers[:i+1], tpDir, tp[i])
		if diffs := CompareViews(view, cimView); len(diffs) > 0 {
			t.Errorf("layer %d: %d differences from the layers' view, first: %v", i, len(diffs), diffs[0])
		}
	}
}

// allPaths lists every file and directory below dir, relative and sorted.
func allPaths(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(dir, p); rel != "." {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// onlyEmptyLayersDir reports whether dir holds nothing but an empty layers/.
func onlyEmptyLayersDir(t testing.TB, dir string) bool {
	p := allPaths(t, dir)
	return len(p) == 0 || (len(p) == 1 && p[0] == "layers")
}

func TestPrepareRefusals(t *testing.T) {
	base := fixture.BaseLayer().Bytes(fixture.Gzip)
	traversal := fixture.NewLayer().Raw(&tar.Header{Name: "Files/../../etc/passwd", Typeflag: tar.TypeReg, Size: 1}, []byte("x")).Bytes(fixture.Uncompressed)
	withDiff := func(b []byte, diff string) builder.LayerSource {
		s := source(b, "sha256:under-test")
		s.DiffID, s.ChainID = diff, "sha256:chain"
		return s
	}
	okSrc := func(b []byte) builder.LayerSource { return withDiff(b, "") }
	tests := []struct {
		name  string
		src   builder.LayerSource
		depth int
		is    error
		want  string
	}{
		{"delta hives", okSrc(fixture.DeltaHiveLayer().Bytes(fixture.Zstd)), 1, ErrDeltaHives, "Hives/"},
		{"truncated gzip", okSrc(base[:len(base)/2]), 0, nil, "sha256:under-test"},
		{"path traversal", okSrc(traversal), 0, nil, "Files/../../etc/passwd"},
		{"whiteout in a base layer", okSrc(fixture.NewLayer().Whiteout("Files/x").Bytes(fixture.Gzip)), 0, nil, "Files/"},
		{"diffID mismatch", withDiff(base, "sha256:"+strings.Repeat("0", 64)), 0, nil, "diffID mismatch"},
		{"no chainID", source(base, "sha256:under-test"), 0, nil, "chainID"},
		{"negative depth", okSrc(base), -1, nil, "depth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p, err := New(WithHiveMerge(HiveMergeRefuse)).Prepare(context.Background(), tt.src, tt.depth, dir)
			if err == nil {
				p.Discard()
				t.Fatal("Prepare succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "sha256:under-test") {
				t.Errorf("err = %q, want it to name the layer and %q", err, tt.want)
			}
			if !onlyEmptyLayersDir(t, dir) {
				t.Errorf("failed Prepare left %v", allPaths(t, dir))
			}
		})
	}
}

// TestFinishFailureLeavesNothing: what only the parent's tree can refuse
// fails at Finish, naming the entry, and removes the staged data too.
func TestFinishFailureLeavesNothing(t *testing.T) {
	baseLayer := chainBytes(1)[0]
	badLink := fixture.NewLayer().HardLink("Files/new-link.exe", "Files/Windows/System32/missing.exe").Bytes(fixture.Gzip)
	badStream := fixture.NewLayer().Dir("Files").Raw(&tar.Header{Name: "Files/absent.txt:ads:$DATA", Typeflag: tar.TypeReg, Size: 2}, []byte("hi")).Bytes(fixture.Gzip)
	app := chainBytes(2)[1]
	tests := []struct {
		name  string
		layer []byte
		depth int
		onto  int // parent index in the built chain, -1 = none
		want  string
	}{
		{"hard link to a path the parent lacks", badLink, 1, 0, "Files/new-link.exe"},
		{"stream of a file the parent lacks", badStream, 1, 0, "Files/absent.txt"},
		{"prepared for depth 2, finished on the base", app, 2, 0, "regions"},
		{"prepared as a child, finished as a base", app, 1, -1, "base layer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			srcs := chainSources(t, [][]byte{baseLayer})
			built := buildSequential(t, dir, srcs)
			before := allPaths(t, dir)

			src := source(tt.layer, "sha256:under-test")
			src.DiffID = diffIDOf(t, tt.layer)
			var parent *builder.BuiltLayer
			if tt.onto >= 0 {
				parent = built[tt.onto]
			}
			src.ChainID = builder.ChainID(srcs[0].ChainID, src.DiffID)
			b := New()
			p, err := b.Prepare(context.Background(), src, tt.depth, dir)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			_, err = b.Finish(context.Background(), p, parent)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "sha256:under-test") {
				t.Fatalf("Finish err = %v, want it to name the layer and %q", err, tt.want)
			}
			if after := allPaths(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Fatalf("failed Finish left files:\nbefore %v\nafter  %v", before, after)
			}
			if err := p.Discard(); err != nil {
				t.Errorf("Discard after a failed Finish: %v", err)
			}
			if _, err := b.Finish(context.Background(), p, parent); err == nil {
				t.Error("a failed prepared layer finished on a second try")
			}
		})
	}
}

func TestDiscardLeavesNothing(t *testing.T) {
	srcs := chainSources(t, chainBytes(3))
	dir := t.TempDir()
	b := New()
	var preps []builder.Prepared
	for i, src := range srcs {
		p, err := b.Prepare(context.Background(), src, i, dir)
		if err != nil {
			t.Fatal(err)
		}
		preps = append(preps, p)
	}
	if len(allPaths(t, dir)) < 2*len(srcs) {
		t.Fatalf("Prepare wrote only %v", allPaths(t, dir))
	}
	for _, p := range preps {
		if err := p.Discard(); err != nil {
			t.Fatal(err)
		}
		if err := p.Discard(); err != nil {
			t.Fatalf("second Discard: %v", err)
		}
	}
	if !onlyEmptyLayersDir(t, dir) {
		t.Fatalf("Discard left %v", allPaths(t, dir))
	}
	if _, err := b.Finish(context.Background(), preps[0], nil); err == nil || !strings.Contains(err.Error(), "discarded") {
		t.Fatalf("Finish after Discard: err = %v", err)
	}
}

func TestTwoPhaseCancellation(t *testing.T) {
	srcs := chainSources(t, chainBytes(2))
	t.Run("before Prepare", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		dir := t.TempDir()
		if _, err := New().Prepare(ctx, srcs[0], 0, dir); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if !onlyEmptyLayersDir(t, dir) {
			t.Fatalf("left %v", allPaths(t, dir))
		}
	})
	t.Run("while streaming", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		src := srcs[0]
		layer := chainBytes(1)[0]
		src.Open = func(context.Context) (io.ReadCloser, error) {
			return buildertest.CancelAfter(bytes.NewReader(layer), len(layer)/3, 4096, cancel), nil
		}
		dir := t.TempDir()
		if _, err := New().Prepare(ctx, src, 0, dir); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if !onlyEmptyLayersDir(t, dir) {
			t.Fatalf("left %v", allPaths(t, dir))
		}
	})
	t.Run("before Finish", func(t *testing.T) {
		dir := t.TempDir()
		b := New()
		p, err := b.Prepare(context.Background(), srcs[0], 0, dir)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := b.Finish(ctx, p, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if !onlyEmptyLayersDir(t, dir) {
			t.Fatalf("left %v", allPaths(t, dir))
		}
	})
}

// benchLayer is a layer of n files of size bytes each, compressible about
// 3:1, under Files/<name>.
func benchLayer(name string, n, size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	l := fixture.NewLayer()
	l.Dir("Files")
	for i := 0; i < n; i++ {
		data := make([]byte, size)
		for j := range data {
			data[j] = "abcdefghijklmnop"[rng.IntN(16)]
		}
		l.File(fmt.Sprintf("Files/%s/f%04d.bin", name, i), data)
	}
	return l.Bytes(fixture.Gzip)
}

// BenchmarkTwoPhaseVsBuildLayer converts three gzip layers of ~24 MiB each:
// BuildLayer in order against Prepare concurrently + Finish in order. It
// reports the ratio sequential/two-phase (> 1: two-phase is faster); the
// gain is bounded by the cores free to decompress in parallel.
func BenchmarkTwoPhaseVsBuildLayer(b *testing.B) {
	layers := [][]byte{benchLayer("base", 96, 256<<10, 1), benchLayer("app1", 96, 256<<10, 2), benchLayer("app2", 96, 256<<10, 3)}
	srcs := chainSources(b, layers)
	var seq, tp time.Duration
	for b.Loop() {
		d1, d2 := b.TempDir(), b.TempDir()
		start := time.Now()
		buildSequential(b, d1, srcs)
		seq += time.Since(start)
		start = time.Now()
		buildTwoPhase(b, d2, srcs)
		tp += time.Since(start)
		os.RemoveAll(d1)
		os.RemoveAll(d2)
	}
	b.ReportMetric(float64(seq)/float64(tp), "seq/twophase")
	b.ReportMetric(float64(seq.Milliseconds())/float64(b.N), "seq-ms/op")
	b.ReportMetric(float64(tp.Milliseconds())/float64(b.N), "twophase-ms/op")
}
