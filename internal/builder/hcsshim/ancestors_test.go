package hcsshim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/builder"
)

// A child is only imported when every ancestor's CIM files are in the build
// directory: a grandparent whose region file is gone (a cached chain unpacked
// without it) is named in the error and nothing is imported.
func TestBuildLayerChecksEveryAncestor(t *testing.T) {
	ctx := context.Background()
	build3 := func(t *testing.T, imp *fakeImporter) (string, []*builder.BuiltLayer) {
		t.Helper()
		dir := t.TempDir()
		return dir, buildFakeChain(t, newTestBuilder(t, imp), dir, 3)
	}
	prefixed := func(names []string, prefix string) string {
		for _, n := range names {
			if strings.HasPrefix(n, prefix) {
				return n
			}
		}
		t.Fatalf("no %s file in %v", prefix, names)
		return ""
	}

	tests := []struct {
		name       string
		breakChain func(t *testing.T, dir string, ls []*builder.BuiltLayer) (errHas []string)
	}{
		{"base (3 generations up) region file missing", func(t *testing.T, dir string, ls []*builder.BuiltLayer) []string {
			n := prefixed(ls[0].CimFiles, "region_")
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				t.Fatal(err)
			}
			return []string{"ancestor (3 generations up)", ls[0].ChainID, n, "missing from the build directory", dir}
		}},
		{"grandparent objectid file missing", func(t *testing.T, dir string, ls []*builder.BuiltLayer) []string {
			n := prefixed(ls[1].CimFiles, "objectid_")
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				t.Fatal(err)
			}
			return []string{"ancestor (2 generations up)", ls[1].ChainID, n}
		}},
		{"base .cim missing", func(t *testing.T, dir string, ls []*builder.BuiltLayer) []string {
			if err := os.Remove(filepath.Join(dir, ls[0].CimName)); err != nil {
				t.Fatal(err)
			}
			return []string{ls[0].ChainID, ls[0].CimName}
		}},
		{"parent region file missing", func(t *testing.T, dir string, ls []*builder.BuiltLayer) []string {
			n := prefixed(ls[2].CimFiles, "region_")
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				t.Fatal(err)
			}
			return []string{"parent " + ls[2].ChainID, n}
		}},
		{"ancestor without a region file list", func(t *testing.T, dir string, ls []*builder.BuiltLayer) []string {
			ls[0].CimFiles = []string{ls[0].CimName}
			return []string{ls[0].ChainID, "lists no region files"}
		}},
		{"ancestor file name with a path", func(t *testing.T, dir string, ls []*builder.BuiltLayer) []string {
			ls[1].CimFiles = append(ls[1].CimFiles, "../elsewhere")
			return []string{ls[1].ChainID, `"../elsewhere" is not a plain name`}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			imp := &fakeImporter{}
			dir, ls := build3(t, imp)
			want := tt.breakChain(t, dir, ls)
			before := dirNames(t, dir)
			calls := len(imp.calls)
			b := newTestBuilder(t, imp)
			_, err := b.BuildLayer(ctx, source(t, "none", "c4", layerTar(t, tarFile{"Files/g", "g"})), ls[2], dir)
			if err == nil {
				t.Fatal("child built on an incomplete chain")
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if len(imp.calls) != calls {
				t.Error("the importer was called")
			}
			if got := dirNames(t, dir); !reflect.DeepEqual(got, before) {
				t.Errorf("rejected build changed the directory: %v -> %v", before, got)
			}
		})
	}

	// The complete chain builds, and a missing file is reported as not found.
	imp := &fakeImporter{}
	dir, ls := build3(t, imp)
	if _, err := newTestBuilder(t, imp).BuildLayer(ctx, source(t, "none", "c4", layerTar(t, tarFile{"Files/g", "g"})), ls[2], dir); err != nil {
		t.Fatalf("complete chain: %v", err)
	}
	os.Remove(filepath.Join(dir, ls[0].CimName))
	_, err := newTestBuilder(t, imp).BuildLayer(ctx, source(t, "none", "c5", layerTar(t, tarFile{"Files/h", "h"})), ls[2], dir)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want it to wrap fs.ErrNotExist", err)
	}
}

// Block chains are checked the same way: the parents' block files must be
// beside the child's.
func TestBuildLayerBlockChecksAncestors(t *testing.T) {
	ctx := context.Background()
	b := newTestBuilder(t, &fakeImporter{}, WithFormat(builder.FormatBlock))
	dir := t.TempDir()
	ls := buildFakeChain(t, b, dir, 2)
	l1, l2 := ls[0], ls[1]
	if err := os.Remove(filepath.Join(dir, l1.CimName)); err != nil {
		t.Fatal(err)
	}
	_, err := b.BuildLayer(ctx, source(t, "none", "c3", layerTar(t, tarFile{"Files/c", "c"})), l2, dir)
	if err == nil || !strings.Contains(err.Error(), l1.CimName) {
		t.Errorf("err = %v, want it to name the missing block file %s", err, l1.CimName)
	}
}

// buildFakeChain builds n one-file layers into dir, each on the previous.
func buildFakeChain(t *testing.T, b *hcsBuilder, dir string, n int) []*builder.BuiltLayer {
	t.Helper()
	var ls []*builder.BuiltLayer
	var parent *builder.BuiltLayer
	for i := range n {
		seed := fmt.Sprintf("c%d", i+1)
		l, err := b.BuildLayer(context.Background(), source(t, "none", seed, layerTar(t, tarFile{"Files/f" + seed, seed})), parent, dir)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		ls, parent = append(ls, l), l
	}
	return ls
}
