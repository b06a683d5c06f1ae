package hcsshim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/buildertest"
)

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	m, err := listNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m))
}

func TestBuildLayerChain(t *testing.T) {
	ctx := context.Background()
	imp := &fakeImporter{}
	b := newTestBuilder(t, imp)
	dir := t.TempDir()

	base := source(t, "gzip", "c1", layerTar(t, tarFile{"Files/Windows/System32/config/SOFTWARE", "sw"}))
	mid := source(t, "zstd", "c2", layerTar(t, tarFile{"Files/app.exe", "app"})) // no delta hives
	top := source(t, "none", "c3", layerTar(t, tarFile{"Hives/SOFTWARE_DELTA", "+delta"}))

	l1, err := b.BuildLayer(ctx, base, nil, dir)
	if err != nil {
		t.Fatalf("base: %v", err)
	}
	l2, err := b.BuildLayer(ctx, mid, l1, dir)
	if err != nil {
		t.Fatalf("mid: %v", err)
	}
	l3, err := b.BuildLayer(ctx, top, l2, dir)
	if err != nil {
		t.Fatalf("top (its merge needs the base hives carried through mid): %v", err)
	}

	allHives := []string{"Hives/DEFAULTUSER_BASE", "Hives/SAM_BASE", "Hives/SECURITY_BASE", "Hives/SOFTWARE_BASE", "Hives/SYSTEM_BASE"}
	if want := append([]string{}, append(allHives, "layout")...); !reflect.DeepEqual(l1.SideFiles, want) {
		t.Errorf("base SideFiles = %v, want %v", l1.SideFiles, want)
	}
	if !reflect.DeepEqual(l2.SideFiles, allHives) {
		t.Errorf("mid SideFiles = %v, want carried-forward %v", l2.SideFiles, allHives)
	}
	merged, err := os.ReadFile(filepath.Join(l3.SideDir, "Hives", "SOFTWARE_BASE"))
	if err != nil || string(merged) != "SOFTWARE_BASE@base+delta" {
		t.Errorf("top SOFTWARE_BASE = %q, %v; want the parent's base merged with the delta", merged, err)
	}

	// Each layer owns exactly its .cim, region and objectid files.
	seen := map[string]bool{}
	for _, l := range []*builder.BuiltLayer{l1, l2, l3} {
		if len(l.CimFiles) != 3 || !contains(l.CimFiles, l.CimName) {
			t.Errorf("%s CimFiles = %v, want its .cim plus one region and one objectid file", l.ChainID, l.CimFiles)
		}
		for _, f := range l.CimFiles {
			if seen[f] {
				t.Errorf("file %s claimed by two layers", f)
			}
			seen[f] = true
		}
		if l.CimDir != dir || l.Format != builder.FormatForked || l.CimVersion != "3.0" || l.Builder != "hcsshim" || l.WindowsBuild != "10.0.20348.2031" || l.Experimental {
			t.Errorf("layer metadata = %+v", l)
		}
		if !strings.HasPrefix(l.CimName, strings.TrimPrefix(l.SourceDigest, "sha256:")+"-") {
			t.Errorf("CimName %s is not named after the layer digest", l.CimName)
		}
	}
	if l3.Parent != l2 || l2.Parent != l1 {
		t.Error("Parent links not kept")
	}

	// hcsshim gets the parents immediate-first.
	last := imp.calls[2]
	if want := []string{l2.SideDir, l1.SideDir}; !reflect.DeepEqual(last.parentLayerPaths, want) {
		t.Errorf("parentLayerPaths = %v, want %v", last.parentLayerPaths, want)
	}
	if want := []string{filepath.Join(dir, l2.CimName), filepath.Join(dir, l1.CimName)}; !reflect.DeepEqual(last.parentCimPaths, want) {
		t.Errorf("parentCimPaths = %v, want %v", last.parentCimPaths, want)
	}
	if len(imp.calls[0].parentLayerPaths) != 0 {
		t.Errorf("base layer got parents %v", imp.calls[0].parentLayerPaths)
	}
}

func TestBuildLayerWithoutCarryForwardFails(t *testing.T) {
	// The fake fails like ORMergeHives when the parent lacks the base hive:
	// this is what carryForwardHives prevents, shown by removing its result.
	ctx := context.Background()
	b := newTestBuilder(t, &fakeImporter{})
	dir := t.TempDir()
	l1, err := b.BuildLayer(ctx, source(t, "none", "c1", layerTar(t, tarFile{"Files/a", "a"})), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := b.BuildLayer(ctx, source(t, "none", "c2", layerTar(t, tarFile{"Files/b", "b"})), l1, dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(l2.SideDir, "Hives", "SYSTEM_BASE"))
	_, err = b.BuildLayer(ctx, source(t, "none", "c3", layerTar(t, tarFile{"Hives/SYSTEM_DELTA", "d"})), l2, dir)
	if err == nil || !strings.Contains(err.Error(), "base hive") {
		t.Fatalf("err = %v, want the merge failure", err)
	}
}

func TestBuildLayerSameChainTwice(t *testing.T) {
	b := newTestBuilder(t, &fakeImporter{})
	dir, other := t.TempDir(), t.TempDir()
	src := source(t, "gzip", "c1", layerTar(t, tarFile{"Files/a", "a"}))
	a, err := b.BuildLayer(context.Background(), src, nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	before := dirNames(t, dir)
	// The chainID's side directory (builder.SideDir) is taken in dir.
	if _, err := b.BuildLayer(context.Background(), src, nil, dir); err == nil || !strings.Contains(err.Error(), "already built in this directory") {
		t.Fatalf("second build into the same dir: err = %v", err)
	}
	if got := dirNames(t, dir); !reflect.DeepEqual(got, before) {
		t.Errorf("refused build changed dir: %v -> %v", before, got)
	}
	if sf, err := sideFiles(a.SideDir); err != nil || !reflect.DeepEqual(sf, a.SideFiles) {
		t.Errorf("first build's side files now %v, %v", sf, err)
	}
	// Another chain directory: the CIM names still differ, so both builds can
	// later sit in one node directory.
	c, err := b.BuildLayer(context.Background(), src, nil, other)
	if err != nil {
		t.Fatal(err)
	}
	if a.CimName == c.CimName {
		t.Errorf("two builds of one layer share the CIM name %s", a.CimName)
	}
}

func TestConcurrentBuildsInOneDir(t *testing.T) {
	// Region files are attributed by a listing diff; concurrent builds into
	// one dir must still each get exactly their own files.
	b := newTestBuilder(t, &fakeImporter{})
	dir := t.TempDir()
	const n = 8
	results := make([]*builder.BuiltLayer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		src := source(t, "gzip", fmt.Sprintf("chain-%d", i), layerTar(t, tarFile{fmt.Sprintf("Files/f%d", i), "x"}))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = b.BuildLayer(context.Background(), src, nil, dir)
		}()
	}
	wg.Wait()
	owner := map[string]int{}
	for i, l := range results {
		if errs[i] != nil {
			t.Fatalf("build %d: %v", i, errs[i])
		}
		if len(l.CimFiles) != 3 {
			t.Errorf("build %d CimFiles = %v, want its .cim, region and objectid", i, l.CimFiles)
		}
		for _, f := range l.CimFiles {
			if j, ok := owner[f]; ok {
				t.Errorf("%s claimed by builds %d and %d", f, j, i)
			}
			owner[f] = i
		}
	}
	if got := len(dirNames(t, dir)); got != 3*n+1 { // + layers/
		t.Errorf("dir holds %d entries, want %d", got, 3*n+1)
	}
	if n := b.dirLocks.Len(); n != 0 {
		t.Errorf("%d directory locks left after the builds", n)
	}
}

// TestDirLocksDropped: a worker builds every chain in a new directory; the
// per-directory locks must not pile up.
func TestDirLocksDropped(t *testing.T) {
	b := newTestBuilder(t, &fakeImporter{})
	for i := 0; i < 20; i++ {
		src := source(t, "gzip", fmt.Sprintf("chain-%d", i), layerTar(t, tarFile{"Files/f", "x"}))
		if _, err := b.BuildLayer(context.Background(), src, nil, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	// A failed build drops its lock too.
	bad := source(t, "gzip", "chain-bad", []byte("not a layer"))
	if _, err := b.BuildLayer(context.Background(), bad, nil, t.TempDir()); err == nil {
		t.Fatal("built garbage")
	}
	if n := b.dirLocks.Len(); n != 0 {
		t.Errorf("%d directory locks left after 21 builds in 21 directories", n)
	}
}

func TestBuildLayerCleansUpOnError(t *testing.T) {
	big := layerTar(t, tarFile{"Files/a", strings.Repeat("x", 64<<10)}, tarFile{"Files/b", "b"})
	tests := []struct {
		name   string
		src    func(t *testing.T, ctx context.Context, cancel context.CancelFunc) builder.LayerSource
		imp    *fakeImporter
		errIs  error
		errHas string
	}{
		{
			name: "import fails after writing",
			src: func(t *testing.T, _ context.Context, _ context.CancelFunc) builder.LayerSource {
				return source(t, "gzip", "c1", big)
			},
			imp:    &fakeImporter{failAfterFiles: errors.New("CimFS: disk full")},
			errHas: "disk full",
		},
		{
			name: "diffID mismatch",
			src: func(t *testing.T, _ context.Context, _ context.CancelFunc) builder.LayerSource {
				s := source(t, "zstd", "c1", big)
				s.DiffID = digestOf([]byte("other"))
				return s
			},
			imp:   &fakeImporter{},
			errIs: ErrDiffIDMismatch,
		},
		{
			name: "cancelled mid-stream",
			src: func(t *testing.T, _ context.Context, cancel context.CancelFunc) builder.LayerSource {
				s := source(t, "none", "c1", big)
				s.Open = func(context.Context) (io.ReadCloser, error) {
					return buildertest.CancelAfter(bytes.NewReader(big), 4096, 512, cancel), nil
				}
				return s
			},
			imp:   &fakeImporter{},
			errIs: context.Canceled,
		},
		{
			name: "open fails",
			src: func(t *testing.T, _ context.Context, _ context.CancelFunc) builder.LayerSource {
				s := source(t, "none", "c1", big)
				s.Open = func(context.Context) (io.ReadCloser, error) { return nil, errors.New("registry 503") }
				return s
			},
			imp:    &fakeImporter{},
			errHas: "registry 503",
		},
		{
			name: "xz layer",
			src: func(t *testing.T, _ context.Context, _ context.CancelFunc) builder.LayerSource {
				s := source(t, "none", "c1", nil)
				s.Open = func(context.Context) (io.ReadCloser, error) {
					return io.NopCloser(bytes.NewReader(append(magicXz, 1, 2, 3))), nil
				}
				return s
			},
			imp:   &fakeImporter{},
			errIs: ErrUnsupportedCompression,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dir := t.TempDir()
			// A pre-existing parent-less CIM in dir must survive the cleanup.
			keep := newTestBuilder(t, &fakeImporter{})
			prev, err := keep.BuildLayer(ctx, source(t, "none", "c0", layerTar(t, tarFile{"Files/z", "z"})), nil, dir)
			if err != nil {
				t.Fatal(err)
			}
			before := dirNames(t, dir)
			beforeSides := dirNames(t, filepath.Join(dir, "layers"))

			b := newTestBuilder(t, tt.imp)
			_, err = b.BuildLayer(ctx, tt.src(t, ctx, cancel), nil, dir)
			if err == nil {
				t.Fatal("BuildLayer succeeded, want error")
			}
			if tt.errIs != nil && !errors.Is(err, tt.errIs) {
				t.Errorf("err = %v, want %v", err, tt.errIs)
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("err = %v, want it to mention %q", err, tt.errHas)
			}
			if got := dirNames(t, dir); !reflect.DeepEqual(got, before) {
				t.Errorf("dir after failed build = %v, want %v", got, before)
			}
			if got := dirNames(t, filepath.Join(dir, "layers")); !reflect.DeepEqual(got, beforeSides) {
				t.Errorf("side dirs after failed build = %v, want %v", got, beforeSides)
			}
			for _, f := range prev.CimFiles {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("earlier layer's file removed: %v", err)
				}
			}
		})
	}
}

func TestBuildLayerRejects(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := newTestBuilder(t, &fakeImporter{})
	good := source(t, "none", "c1", layerTar(t, tarFile{"Files/a", "a"}))
	parent, err := b.BuildLayer(ctx, good, nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	child := source(t, "none", "c2", layerTar(t, tarFile{"Files/b", "b"}))

	portableParent := *parent
	portableParent.Builder = "portable"
	blockParent := *parent
	blockParent.Format = builder.FormatBlock

	tests := []struct {
		name   string
		src    builder.LayerSource
		parent *builder.BuiltLayer
		dir    string
		errHas string
	}{
		{"digest not sha256", func() builder.LayerSource { s := good; s.Digest = "md5:abc"; return s }(), nil, dir, "layer digest"},
		{"digest with path", func() builder.LayerSource { s := good; s.Digest = "sha256:../../" + strings.Repeat("a", 58); return s }(), nil, dir, "hex"},
		{"chainID missing", func() builder.LayerSource { s := good; s.ChainID = ""; return s }(), nil, dir, "chainID"},
		{"no Open", func() builder.LayerSource { s := good; s.Open = nil; return s }(), nil, dir, "no Open"},
		{"empty dir", good, nil, "", "empty CIM directory"},
		{"parent in another dir", child, parent, t.TempDir(), "beside its parent"},
		{"parent from portable", child, &portableParent, dir, "CimFS-built parents"},
		{"parent of another format", child, &blockParent, dir, "block CIM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dirNames(t, dir)
			_, err := b.BuildLayer(ctx, tt.src, tt.parent, tt.dir)
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.errHas)
			}
			if got := dirNames(t, dir); !reflect.DeepEqual(got, before) {
				t.Errorf("rejected build changed dir: %v -> %v", before, got)
			}
		})
	}
}

func TestBuildLayerBlock(t *testing.T) {
	ctx := context.Background()
	imp := &fakeImporter{}
	b := newTestBuilder(t, imp, WithFormat(builder.FormatBlock), WithIntegrity(true))
	dir := t.TempDir()
	l1, err := b.BuildLayer(ctx, source(t, "gzip", "c1", layerTar(t, tarFile{"Files/a", "a"})), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := b.BuildLayer(ctx, source(t, "gzip", "c2", layerTar(t, tarFile{"Hives/SAM_DELTA", "+d"})), l1, dir)
	if err != nil {
		t.Fatalf("child block layer (hive merge reads the parent's side dir): %v", err)
	}
	for _, l := range []*builder.BuiltLayer{l1, l2} {
		if l.Format != builder.FormatBlock || l.CimDir != dir || !reflect.DeepEqual(l.CimFiles, []string{l.CimName}) || !strings.HasSuffix(l.CimName, ".bcim") {
			t.Errorf("block layer = %+v", l)
		}
		if _, err := os.Stat(filepath.Join(dir, l.CimName)); err != nil {
			t.Errorf("block file not moved beside the chain: %v", err)
		}
		if len(l.IntegrityDigest) != 64 {
			t.Errorf("IntegrityDigest = %q, want the importer's hex digest", l.IntegrityDigest)
		}
		if l.SideDir != builder.SideDir(dir, l.ChainID) {
			t.Errorf("SideDir = %s, want %s", l.SideDir, builder.SideDir(dir, l.ChainID))
		}
	}
	if got, _ := os.ReadFile(filepath.Join(l2.SideDir, "Hives", "SAM_BASE")); string(got) != "SAM_BASE@base+d" {
		t.Errorf("merged SAM_BASE = %q", got)
	}
	if want := []string{l1.SideDir}; !reflect.DeepEqual(imp.calls[1].parentLayerPaths, want) {
		t.Errorf("parent layer paths = %v, want %v", imp.calls[1].parentLayerPaths, want)
	}
	if filepath.Dir(imp.calls[1].cimPath) != l2.SideDir {
		t.Errorf("block CIM written at %s, want inside the side dir (hcsshim keeps hives beside it)", imp.calls[1].cimPath)
	}
}

func TestWorkDirHoldsSideDirectories(t *testing.T) {
	work := t.TempDir()
	b := newTestBuilder(t, &fakeImporter{}, WithWorkDir(work))
	dir := t.TempDir()
	l, err := b.BuildLayer(context.Background(), source(t, "none", "c1", layerTar(t, tarFile{"Files/a", "a"})), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if l.SideDir != builder.SideDir(work, l.ChainID) {
		t.Errorf("SideDir = %s, want %s", l.SideDir, builder.SideDir(work, l.ChainID))
	}
	if err := RemoveLayer(l); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("after RemoveLayer dir holds %v", got)
	}
	if got := dirNames(t, filepath.Dir(l.SideDir)); len(got) != 0 {
		t.Errorf("after RemoveLayer side root holds %v", got)
	}
}

func TestRemoveLayerRefusesPathsInNames(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := RemoveLayer(&builder.BuiltLayer{ChainID: "x", CimDir: filepath.Join(dir, "sub"), CimFiles: []string{"../victim"}})
	if err == nil {
		t.Fatal("RemoveLayer accepted a CIM file name with a path")
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("file outside CimDir removed: %v", err)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
