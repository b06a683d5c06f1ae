package portable

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/builder"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current builder")

// TestBuildLayerGolden pins the bytes the builder writes for a fixture chain
// (the files' SHA-256), with the chainIDs known up front and derived while
// streaming. The golden file was written by the builder before BuildLayer
// became Prepare + Finish; any change to the CIM bytes shows here.
// Regenerate (after checking the change is intended) with
// `go test ./internal/builder/portable -run TestBuildLayerGolden -update`.
func TestBuildLayerGolden(t *testing.T) {
	layers := chainBytes(4)
	var got strings.Builder
	for _, known := range []bool{true, false} {
		dir := t.TempDir()
		var parent *builder.BuiltLayer
		chain := ""
		for i, l := range layers {
			src := source(l, fmt.Sprintf("sha256:layer%d", i))
			if known {
				src.DiffID = diffIDOf(t, l)
				chain = builder.ChainID(chain, src.DiffID)
				src.ChainID = chain
			}
			bl, err := New().BuildLayer(context.Background(), src, parent, dir)
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			parent = bl
		}
		files := dirFiles(t, dir)
		names := keys(files)
		sort.Strings(names)
		fmt.Fprintf(&got, "# chainIDs known: %v\n", known)
		for _, n := range names {
			fmt.Fprintf(&got, "%x  %s\n", sha256.Sum256(files[n]), filepath.ToSlash(n))
		}
	}
	path := filepath.Join("testdata", "buildlayer.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Errorf("built files differ from %s:\n%s\nwant\n%s", path, got.String(), want)
	}
}
