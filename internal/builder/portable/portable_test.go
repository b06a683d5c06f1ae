package portable

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/fsview"
	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func source(b []byte, name string) builder.LayerSource {
	return builder.LayerSource{
		Digest: name,
		Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		},
	}
}

func openers(layers [][]byte) []func() (io.ReadCloser, error) {
	var out []func() (io.ReadCloser, error)
	for _, b := range layers {
		out = append(out, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	}
	return out
}

// buildChain builds layers in dir and returns the built layers.
func buildChain(t *testing.T, b *Builder, dir string, layers [][]byte) []*builder.BuiltLayer {
	t.Helper()
	var parent *builder.BuiltLayer
	var out []*builder.BuiltLayer
	for i, l := range layers {
		bl, err := b.BuildLayer(context.Background(), source(l, "layer"+string(rune('0'+i))), parent, dir)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		out = append(out, bl)
		parent = bl
	}
	return out
}

func chainBytes(n int) [][]byte {
	comps := []fixture.Compression{fixture.Gzip, fixture.Zstd, fixture.Uncompressed}
	var out [][]byte
	for i, l := range fixture.Chain(n) {
		out = append(out, l.Bytes(comps[i%len(comps)]))
	}
	return out
}

func TestChainViewMatchesLayers(t *testing.T) {
	layers := chainBytes(4)
	dir := t.TempDir()
	built := buildChain(t, New(), dir, layers)
	for i := range built {
		want, got := chainViews(t, layers[:i+1], dir, built[i])
		if diffs := CompareViews(want, got); len(diffs) > 0 {
			t.Fatalf("layer %d: %d differences, first: %v", i, len(diffs), diffs[0])
		}
		if !built[i].Experimental || built[i].Builder != Name || built[i].Format != builder.FormatForked {
			t.Errorf("layer %d: metadata %+v", i, built[i])
		}
	}
	// The child's own region files hold only its new data: the parent's
	// data is referenced, not copied.
	if base, child := regionBytes(t, dir, built[0]), regionBytes(t, dir, built[1]); child >= base {
		t.Errorf("child regions %d bytes >= base regions %d bytes: parent data copied?", child, base)
	}
}

// TestNamesCountAsInTheCIM: names whose case strings.ToUpper folds together
// but the CIM's upcase table does not ("I.txt" and "ı.txt", "S" and "ſ",
// "Μ" and "µ") are separate entries in the CIM, in the layers' expected view
// and for CompareViews alike; names the table folds together ("a.txt" and
// "A.TXT", across layers) are one. The expected view used to have one entry
// where the CIM had two, and CompareViews, matching by strings.ToUpper,
// collapsed the CIM's two and reported no difference.
func TestNamesCountAsInTheCIM(t *testing.T) {
	base := fixture.NewLayer().Dir("Files").
		File("Files/I.txt", []byte("dotted")).File("Files/\u0131.txt", []byte("dotless")).
		File("Files/S", []byte("S")).File("Files/\u017f", []byte("long s")).
		File("Files/\u039c", []byte("Mu")).File("Files/\u00b5", []byte("micro")).
		File("Files/a.txt", []byte("a")).Bytes(fixture.Uncompressed)
	child := fixture.NewLayer().NoAutoDirs().File("Files/A.TXT", []byte("A")).File("Files/s", []byte("s")).Bytes(fixture.Uncompressed)
	layers := [][]byte{base, child}
	dir := t.TempDir()
	built := buildChain(t, New(), dir, layers)
	for i := range built {
		want, got := chainViews(t, layers[:i+1], dir, built[i])
		if len(got) != 8 || len(want) != len(got) {
			t.Errorf("layer %d: the CIM has %d entries, the expected view %d; want Files and 7 files in both", i, len(got), len(want))
		}
		if diffs := CompareViews(want, got); len(diffs) > 0 {
			t.Errorf("layer %d: differences %v", i, diffs)
		}
	}
}

// chainViews returns the view the layers merge to (ExpectedView) and the
// view of b, their top layer built in dir.
func chainViews(t *testing.T, layers [][]byte, dir string, b *builder.BuiltLayer) (want, got []fsview.Entry) {
	t.Helper()
	want, err := ExpectedView(context.Background(), openers(layers))
	if err != nil {
		t.Fatal(err)
	}
	im, err := cim.Open(filepath.Join(dir, b.CimName))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if got, err = im.View(); err != nil {
		t.Fatal(err)
	}
	return want, got
}

func regionBytes(t *testing.T, dir string, b *builder.BuiltLayer) int64 {
	var n int64
	for _, f := range b.CimFiles {
		if strings.HasPrefix(f, "region_") {
			st, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			n += st.Size()
		}
	}
	return n
}

func TestBaseLayerProcessing(t *testing.T) {
	layers := chainBytes(2)
	dir := t.TempDir()
	built := buildChain(t, New(), dir, layers)
	im, err := cim.Open(filepath.Join(dir, built[0].CimName))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, h := range hives {
		base, err := readAll(im, hivesDir+"/"+h.base)
		if err != nil {
			t.Fatalf("%s in CIM: %v", h.base, err)
		}
		cfg, err := readAll(im, configDir+"/"+h.name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(base, cfg) || !bytes.HasPrefix(base, []byte("regf")) {
			t.Fatalf("%s differs from config/%s", h.base, h.name)
		}
		side, err := os.ReadFile(filepath.Join(built[0].SideDir, hivesDir, h.base))
		if err != nil || !bytes.Equal(side, cfg) {
			t.Fatalf("side file %s: %v", h.base, err)
		}
	}
	layout, err := readAll(im, layoutName)
	if err != nil || string(layout) != layoutText {
		t.Fatalf("layout in CIM = %q, %v", layout, err)
	}
	wantSide := []string{"Hives/DEFAULTUSER_BASE", "Hives/SAM_BASE", "Hives/SECURITY_BASE", "Hives/SOFTWARE_BASE", "Hives/SYSTEM_BASE", "layout"}
	for i, b := range built {
		if strings.Join(b.SideFiles, ",") != strings.Join(wantSide, ",") {
			t.Errorf("layer %d side files %v, want %v (carried forward)", i, b.SideFiles, wantSide)
		}
		if b.SideDir != builder.SideDir(dir, b.ChainID) {
			t.Errorf("layer %d side dir %s", i, b.SideDir)
		}
	}
}

func readAll(im *cim.Image, p string) ([]byte, error) {
	r, err := im.Open(p)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeterministic(t *testing.T) {
	layers := chainBytes(3)
	d1, d2 := t.TempDir(), t.TempDir()
	buildChain(t, New(), d1, layers)
	// The second build knows the chainIDs up front (as the registry path
	// does); the first derived them while streaming. Same bytes either way.
	var parent *builder.BuiltLayer
	chain := ""
	for i, l := range layers {
		src := source(l, "x")
		diff := diffIDOf(t, l)
		chain = builder.ChainID(chain, diff)
		src.ChainID, src.DiffID = chain, diff
		bl, err := New().BuildLayer(context.Background(), src, parent, d2)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		parent = bl
	}
	f1, f2 := dirFiles(t, d1), dirFiles(t, d2)
	if len(f1) == 0 || len(f1) != len(f2) {
		t.Fatalf("file sets differ: %d vs %d", len(f1), len(f2))
	}
	for name, b := range f1 {
		if !bytes.Equal(b, f2[name]) {
			t.Errorf("%s differs between builds", name)
		}
	}
}

func diffIDOf(t testing.TB, layer []byte) string {
	t.Helper()
	r, err := wclayer.NewReader(bytes.NewReader(layer), wclayer.WithParentLookup(func(string) bool { return true }))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := r.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	d, err := r.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDeltaHivesRefused(t *testing.T) {
	base := fixture.BaseLayer().Bytes(fixture.Gzip)
	delta := fixture.DeltaHiveLayer().Bytes(fixture.Gzip)
	dir := t.TempDir()
	parent := buildChain(t, New(), dir, [][]byte{base})[0]
	before := dirFiles(t, dir)
	_, err := New(WithHiveMerge(HiveMergeRefuse)).BuildLayer(context.Background(), source(delta, "sha256:delta"), parent, dir)
	if !errors.Is(err, ErrDeltaHives) {
		t.Fatalf("err = %v, want ErrDeltaHives", err)
	}
	if !strings.Contains(err.Error(), "sha256:delta") || !strings.Contains(err.Error(), "hcsshim") {
		t.Errorf("error %q should name the layer and the Windows builder", err)
	}
	if after := dirFiles(t, dir); len(after) != len(before) {
		t.Fatalf("failed build left files: %d before, %d after", len(before), len(after))
	}
	bl, err := New(WithUnmergedDeltaHives()).BuildLayer(context.Background(), source(delta, "sha256:delta"), parent, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bl.UnmergedDeltas {
		t.Fatal("UnmergedDeltas not set")
	}
}

func TestBadLayersLeaveNothing(t *testing.T) {
	traversal := fixture.NewLayer().Raw(&tar.Header{Name: "Files/../../etc/passwd", Typeflag: tar.TypeReg, Size: 1}, []byte("x")).Bytes(fixture.Uncompressed)
	good := fixture.BaseLayer().Bytes(fixture.Gzip)
	truncated := good[:len(good)/2]
	tests := []struct {
		name  string
		layer []byte
		want  string
	}{
		{"path traversal", traversal, "Files/../../etc/passwd"},
		{"truncated gzip", truncated, "layer-under-test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := New().BuildLayer(context.Background(), source(tt.layer, "layer-under-test"), nil, dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to name %q", err, tt.want)
			}
			if files := dirFiles(t, dir); len(files) != 0 {
				t.Fatalf("failed build left %v", keys(files))
			}
		})
	}
}

func TestCancelledBuildLeavesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	_, err := New().BuildLayer(ctx, source(fixture.BaseLayer().Bytes(fixture.Gzip), "l"), nil, dir)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if files := dirFiles(t, dir); len(files) != 0 {
		t.Fatalf("cancelled build left %v", keys(files))
	}
}

func TestDiffIDMismatch(t *testing.T) {
	src := source(fixture.BaseLayer().Bytes(fixture.Gzip), "l")
	src.DiffID = "sha256:" + strings.Repeat("0", 64)
	src.ChainID = src.DiffID
	_, err := New().BuildLayer(context.Background(), src, nil, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "diffID mismatch") {
		t.Fatalf("err = %v, want a diffID mismatch", err)
	}
}

func keys(m map[string][]byte) []string { return slices.Sorted(maps.Keys(m)) }

func TestRegionSetIDIsVersion5(t *testing.T) {
	a, b := RegionSetID("sha256:aa"), RegionSetID("sha256:bb")
	if a == b {
		t.Fatal("different chainIDs gave the same GUID")
	}
	if RegionSetID("sha256:aa") != a {
		t.Fatal("RegionSetID is not deterministic")
	}
	// xxxxxxxx-xxxx-5xxx-[89ab]xxx-xxxxxxxxxxxx
	s := a.String()
	if s[14] != '5' || !strings.ContainsRune("89ab", rune(s[19])) {
		t.Fatalf("GUID %s is not shaped as a version-5 RFC 4122 GUID", s)
	}
}

// Whiteouts, replacements that remove a directory's subtree, and the
// directories a hand-made tar implies, applied as the layers' merged view
// (ExpectedView, what `cim verify` checks) applies them: a whiteout of a
// path that does not exist removes nothing and creates nothing; a file, hard
// link, junction or directory symlink replacing a directory drops its
// subtree, and a directory replacing a junction starts empty; a directory a
// layer removed is created again by a later entry below it. Each layer is
// built with BuildLayer and with Prepare and Finish, and each CIM's view
// must equal the layers' and lack absent.
func TestWhiteoutsMatchExpectedView(t *testing.T) {
	base := fixture.NewLayer().File("Files/App/b.txt", []byte("b")).File("Files/keep.txt", []byte("k")).File("Files/f", []byte("f")).
		Symlink("Files/J", `C:\j`, fixture.WithMountPoint())
	tests := []struct {
		name   string
		layer  *fixture.Layer
		absent []string
	}{
		{
			// As a tar may list a deleted directory's children too.
			name:   "whiteout under a directory the layer deleted",
			layer:  fixture.NewLayer().NoAutoDirs().Whiteout("Files/App").Whiteout("Files/App/b.txt"),
			absent: []string{"Files/App"},
		},
		{
			name:   "whiteout under a directory that exists nowhere",
			layer:  fixture.NewLayer().NoAutoDirs().Whiteout("Files/Nowhere/x.txt"),
			absent: []string{"Files/Nowhere"},
		},
		{
			name:  "whiteout under a file of the parent",
			layer: fixture.NewLayer().NoAutoDirs().Whiteout("Files/f/x.txt"),
		},
		{
			name:   "implied directory after its whiteout",
			layer:  fixture.NewLayer().NoAutoDirs().File("Files/D/a.txt", []byte("a")).Whiteout("Files/D").File("Files/D/b.txt", []byte("b")),
			absent: []string{"Files/D/a.txt"},
		},
		{
			name:   "implied directory after a whiteout spelt otherwise",
			layer:  fixture.NewLayer().NoAutoDirs().File("Files/D/a.txt", []byte("a")).Whiteout("Files/d").File("Files/D/b.txt", []byte("b")),
			absent: []string{"Files/D/a.txt"},
		},
		{
			name:   "implied directory after a whiteout of its parent",
			layer:  fixture.NewLayer().NoAutoDirs().File("Files/D/x/a.txt", []byte("a")).Whiteout("Files/D").File("Files/D/x/b.txt", []byte("b")),
			absent: []string{"Files/D/x/a.txt"},
		},
		{
			// A file replacing a directory removes its subtree as a
			// whiteout does; the directory listed again is empty.
			name: "implied directory after a file replaced its parent",
			layer: fixture.NewLayer().NoAutoDirs().File("Files/D/x/a.txt", []byte("a")).File("Files/D", []byte("file")).
				Dir("Files/D").File("Files/D/x/b.txt", []byte("b")),
			absent: []string{"Files/D/x/a.txt"},
		},
		{
			name: "implied directory after a hard link replaced its parent",
			layer: fixture.NewLayer().NoAutoDirs().File("Files/D/x/a.txt", []byte("a")).HardLink("Files/D", "Files/keep.txt").
				Dir("Files/D").File("Files/D/x/b.txt", []byte("b")),
			absent: []string{"Files/D/x/a.txt"},
		},
		{
			name:   "junction replacing a parent's directory",
			layer:  fixture.NewLayer().NoAutoDirs().Symlink("Files/app", `C:\elsewhere`, fixture.WithMountPoint()),
			absent: []string{"Files/App/b.txt"},
		},
		{
			name:   "directory symlink replacing a parent's directory",
			layer:  fixture.NewLayer().NoAutoDirs().Symlink("Files/App", `..\elsewhere`, fixture.WithAttributes(0x410)),
			absent: []string{"Files/App/b.txt"},
		},
		{
			name:  "directory replacing a parent's junction",
			layer: fixture.NewLayer().NoAutoDirs().Dir("Files/J").File("Files/J/y.txt", []byte("y")),
		},
		{
			// The layer's own directories below D leave the tree with it.
			name: "implied directory after a junction replaced its parent",
			layer: fixture.NewLayer().NoAutoDirs().Dir("Files/D").Dir("Files/D/x").File("Files/D/x/a.txt", []byte("a")).
				Symlink("Files/D", `C:\elsewhere`, fixture.WithMountPoint()).
				Dir("Files/D").File("Files/D/x/b.txt", []byte("b")),
			absent: []string{"Files/D/x/a.txt"},
		},
	}
	for _, tt := range tests {
		layers := [][]byte{base.Bytes(fixture.Uncompressed), tt.layer.Bytes(fixture.Uncompressed)}
		want, err := ExpectedView(context.Background(), openers(layers))
		if err != nil {
			t.Fatalf("%s: the layers' view: %v", tt.name, err)
		}
		for _, build := range []struct {
			name string
			run  func(t *testing.T, dir string) []*builder.BuiltLayer
		}{
			{"BuildLayer", func(t *testing.T, dir string) []*builder.BuiltLayer { return buildChain(t, New(), dir, layers) }},
			{"two-phase", func(t *testing.T, dir string) []*builder.BuiltLayer {
				return buildTwoPhase(t, dir, chainSources(t, layers))
			}},
		} {
			t.Run(tt.name+"/"+build.name, func(t *testing.T) {
				dir := t.TempDir()
				built := build.run(t, dir)
				im, err := cim.Open(filepath.Join(dir, built[1].CimName))
				if err != nil {
					t.Fatal(err)
				}
				defer im.Close()
				got, err := im.View()
				if err != nil {
					t.Fatal(err)
				}
				if d := CompareViews(want, got); len(d) > 0 {
					t.Errorf("the CIM's view differs from the layers': %v", d)
				}
				for _, p := range tt.absent {
					if _, err := im.Stat(p); err == nil {
						t.Errorf("%s exists in the CIM", p)
					}
				}
			})
		}
	}
}
