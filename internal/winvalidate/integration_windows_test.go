//go:build windows && windows_integration

// Integration tests against the real CimFS driver: portable-built CIMs are
// mounted and compared with their layers, and with hcsshim-built CIMs of the
// same chain. They need an elevated Windows Server 2022 (10.0.20348.2031+)
// or 2025 host and run with
//
//	go test -tags windows_integration ./internal/winvalidate/...
//
// They have never run in this project's own CI (Linux): see docs/windows.md.
package winvalidate_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/hcsshim"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/fsview"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
	"github.com/cimconv/cimconv/internal/winvalidate"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func sources(layers []*fixture.Layer) []builder.LayerSource {
	var out []builder.LayerSource
	chain := ""
	for _, l := range layers {
		tarball := l.Bytes(fixture.Uncompressed)
		blob := l.Bytes(fixture.Gzip)
		chain = builder.ChainID(chain, digest(tarball))
		out = append(out, builder.LayerSource{
			Digest: digest(blob), DiffID: digest(tarball), ChainID: chain, Size: int64(len(blob)),
			Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil },
		})
	}
	return out
}

func openers(srcs []builder.LayerSource) []func() (io.ReadCloser, error) {
	var out []func() (io.ReadCloser, error)
	for _, s := range srcs {
		out = append(out, func() (io.ReadCloser, error) { return s.Open(context.Background()) })
	}
	return out
}

func build(t *testing.T, b builder.Builder, srcs []builder.LayerSource) []*builder.BuiltLayer {
	t.Helper()
	dir := t.TempDir()
	var out []*builder.BuiltLayer
	var parent *builder.BuiltLayer
	for i, s := range srcs {
		l, err := b.BuildLayer(context.Background(), s, parent, dir)
		if err != nil {
			t.Fatalf("%s layer %d: %v", b.Capabilities().Name, i, err)
		}
		out, parent = append(out, l), l
	}
	return out
}

func mounted(t *testing.T, l *builder.BuiltLayer) []fsview.Entry {
	t.Helper()
	v, err := winvalidate.MountedView(context.Background(), filepath.Join(l.CimDir, l.CimName), winvalidate.WithRootDigest(l.IntegrityDigest))
	if errors.Is(err, winvalidate.ErrMountUnsupported) {
		t.Skipf("cannot check here: %v", err)
	}
	if err != nil {
		t.Fatalf("mount %s: %v", l.CimName, err)
	}
	return v
}

// compare is winvalidate.Compare, failing the test on malformed descriptors.
func compare(t *testing.T, want, got []fsview.Entry) []fsview.Difference {
	t.Helper()
	diffs, err := winvalidate.Compare(want, got)
	if err != nil {
		t.Fatal(err)
	}
	return diffs
}

func report(t *testing.T, what string, diffs []fsview.Difference) {
	t.Helper()
	for i, d := range diffs {
		if i == 50 {
			t.Errorf("%s: ... %d differences in all", what, len(diffs))
			return
		}
		t.Errorf("%s: %s", what, d)
	}
}

// The check this package exists for: every CIM of a portable-built chain,
// mounted by CimFS, shows exactly its layers' expected view.
func TestIntegrationPortableChainMatchesLayers(t *testing.T) {
	srcs := sources(fixture.Chain(3))
	built := build(t, portable.New(), srcs)
	for i, l := range built {
		want, err := portable.ExpectedView(context.Background(), openers(srcs[:i+1]))
		if err != nil {
			t.Fatal(err)
		}
		report(t, l.CimName, compare(t, want, mounted(t, l)))
	}
}

// hcsshim-built and portable-built CIMs of one chain mount to the same view.
func TestIntegrationHcsshimAndPortableAgree(t *testing.T) {
	hb, err := hcsshim.New()
	if errors.Is(err, builder.ErrUnavailable) {
		t.Skipf("CimFS unavailable: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	srcs := sources(fixture.Chain(3))
	hcs := build(t, hb, srcs)
	port := build(t, portable.New(), srcs)
	for i := range srcs {
		hv := mounted(t, hcs[i])
		report(t, "hcsshim vs portable layer "+hcs[i].ChainID, fsview.Compare(hv, mounted(t, port[i]), fsview.CompareOptions{}))
		want, err := portable.ExpectedView(context.Background(), openers(srcs[:i+1]))
		if err != nil {
			t.Fatal(err)
		}
		report(t, "hcsshim vs layers "+hcs[i].ChainID, compare(t, want, hv))
	}
}
