package fetchtest

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/fetch"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
)

// Openers turns in-memory layers into the openers portable.ExpectedView takes.
func Openers(layers [][]byte) []func() (io.ReadCloser, error) {
	var out []func() (io.ReadCloser, error)
	for _, b := range layers {
		out = append(out, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	}
	return out
}

// CheckFetched fetches image's artifact into a temp dir for a node on
// nodeBuild ("" for any) and fails the test unless every layer's CIM is
// placed under cim-layers and the top CIM's view equals the layers' merged
// view (base layer first).
func CheckFetched(t testing.TB, reg *registry.Client, image, nodeBuild string, layers [][]byte) *fetch.Result {
	t.Helper()
	dest := t.TempDir()
	res, err := fetch.New(reg, nil).Fetch(context.Background(), image, fetch.Options{Dest: dest, NodeBuild: nodeBuild, Verifier: trust.AllowUnsigned()})
	if err != nil {
		t.Fatalf("fetch %s: %v", image, err)
	}
	want, err := portable.ExpectedView(context.Background(), Openers(layers))
	if err != nil {
		t.Fatal(err)
	}
	im, err := cim.Open(res.Cim)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	got, err := im.View()
	if err != nil {
		t.Fatal(err)
	}
	if diffs := portable.CompareViews(want, got); len(diffs) > 0 {
		t.Fatalf("fetched CIM differs from the layers: %d differences, first %v", len(diffs), diffs[0])
	}
	for _, l := range res.Layers {
		if _, err := os.Stat(l.Cim); err != nil {
			t.Errorf("layer CIM not placed: %v", err)
		}
		if !strings.HasPrefix(l.Cim, filepath.Join(dest, fetch.CimDirName)) {
			t.Errorf("CIM %s outside %s", l.Cim, fetch.CimDirName)
		}
	}
	return res
}
