//go:build windows && windows_integration

// Integration tests against the real CimFS driver and offreg. They need an
// elevated Windows Server 2022 (10.0.20348.2031+) or 2025 host and run with
//
//	go test -tags windows_integration ./internal/builder/hcsshim/...
//
// They have never run in this project's own CI (Linux): see docs/windows.md.
package hcsshim_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/buildertest"
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

// sources turns fixture layers into LayerSources with real digests, diffIDs
// and chainIDs, compressed with c.
func sources(layers []*fixture.Layer, c fixture.Compression) ([]builder.LayerSource, [][]byte) {
	var out []builder.LayerSource
	var tars [][]byte
	chain := ""
	for _, l := range layers {
		tarball := l.Bytes(fixture.Uncompressed)
		blob := l.Bytes(c)
		chain = builder.ChainID(chain, digest(tarball))
		out = append(out, builder.LayerSource{
			Digest: digest(blob), DiffID: digest(tarball), ChainID: chain, Size: int64(len(blob)),
			Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil },
		})
		tars = append(tars, tarball)
	}
	return out, tars
}

func newBuilder(t *testing.T, opts ...hcsshim.Option) builder.Builder {
	t.Helper()
	b, err := hcsshim.New(opts...)
	if errors.Is(err, builder.ErrUnavailable) {
		t.Skipf("CimFS unavailable on this host: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// offreg creates real registry hives for the delta-hive merge.
var (
	offreg       = windows.NewLazySystemDLL("offreg.dll")
	orCreateHive = offreg.NewProc("ORCreateHive")
	orCreateKey  = offreg.NewProc("ORCreateKey")
	orCloseKey   = offreg.NewProc("ORCloseKey")
	orSaveHive   = offreg.NewProc("ORSaveHive")
	orCloseHive  = offreg.NewProc("ORCloseHive")
)

// realHive returns the bytes of a hive holding one key named key.
func realHive(t *testing.T, key string) []byte {
	t.Helper()
	if err := offreg.Load(); err != nil {
		t.Skipf("offreg.dll: %v", err)
	}
	var hive, sub uintptr
	if rc, _, _ := orCreateHive.Call(uintptr(unsafe.Pointer(&hive))); rc != 0 {
		t.Fatalf("ORCreateHive: %v", windows.Errno(rc))
	}
	defer orCloseHive.Call(hive)
	name, _ := windows.UTF16PtrFromString(key)
	var disp uint32
	if rc, _, _ := orCreateKey.Call(hive, uintptr(unsafe.Pointer(name)), 0, 0, 0, uintptr(unsafe.Pointer(&sub)), uintptr(unsafe.Pointer(&disp))); rc != 0 {
		t.Fatalf("ORCreateKey: %v", windows.Errno(rc))
	}
	orCloseKey.Call(sub)
	p := filepath.Join(t.TempDir(), key+".hive")
	pp, _ := windows.UTF16PtrFromString(p)
	if rc, _, _ := orSaveHive.Call(hive, uintptr(unsafe.Pointer(pp)), 10, 0); rc != 0 {
		t.Fatalf("ORSaveHive: %v", windows.Errno(rc))
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hiveChain is a base layer with real hives, a layer without hives and a
// layer with a real SOFTWARE delta hive.
func hiveChain(t *testing.T) []*fixture.Layer {
	base := fixture.NewLayer()
	base.Dir("Files")
	for _, h := range []string{"DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"} {
		base.File("Files/Windows/System32/config/"+h, realHive(t, "Base"+h), fixture.WithSD(fixture.SDSystemOnly))
	}
	base.File("Files/Windows/System32/cmd.exe", fixture.PE("cmd.exe", 16<<10))
	app := fixture.NewLayer()
	app.Dir("Files")
	app.File("Files/app/app.exe", fixture.PE("app.exe", 8<<10))
	delta := fixture.NewLayer()
	delta.Dir("Hives")
	delta.File("Hives/Software_Delta", realHive(t, "Delta"), fixture.WithSD(fixture.SDSystemOnly))
	return []*fixture.Layer{base, app, delta}
}

func buildChain(t *testing.T, b builder.Builder, srcs []builder.LayerSource, dir string) []*builder.BuiltLayer {
	t.Helper()
	var out []*builder.BuiltLayer
	var parent *builder.BuiltLayer
	for i, s := range srcs {
		l, err := b.BuildLayer(context.Background(), s, parent, dir)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		out = append(out, l)
		parent = l
	}
	return out
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return digest(b)
}

func TestIntegrationForkedChainMergesHives(t *testing.T) {
	b := newBuilder(t)
	srcs, _ := sources(hiveChain(t), fixture.Gzip)
	dir := t.TempDir()
	ls := buildChain(t, b, srcs, dir)

	seen := map[string]bool{}
	for i, l := range ls {
		var region, objectid bool
		for _, f := range l.CimFiles {
			if seen[f] {
				t.Errorf("layer %d: %s also claimed by an earlier layer", i, f)
			}
			seen[f] = true
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("layer %d: %v", i, err)
			}
			region = region || strings.HasPrefix(f, "region_")
			objectid = objectid || strings.HasPrefix(f, "objectid_")
		}
		if !region || !objectid {
			t.Errorf("layer %d CimFiles %v lack region/objectid files", i, l.CimFiles)
		}
		if len(l.SideFiles) < 5 {
			t.Errorf("layer %d SideFiles = %v, want all five Hives/*_BASE", i, l.SideFiles)
		}
	}
	sw := func(l *builder.BuiltLayer) string {
		return fileSum(t, filepath.Join(l.SideDir, "Hives", "SOFTWARE_BASE"))
	}
	if sw(ls[1]) != sw(ls[0]) {
		t.Error("layer without delta hives did not carry SOFTWARE_BASE forward unchanged")
	}
	if sw(ls[2]) == sw(ls[1]) {
		t.Error("delta layer's SOFTWARE_BASE equals its parent's: no merge happened")
	}

	view, err := winvalidate.MountedView(context.Background(), filepath.Join(dir, ls[2].CimName))
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]fsview.Entry{}
	for _, e := range view {
		byPath[fsview.FoldPath(e.Path)] = e
	}
	if _, ok := byPath[fsview.FoldPath("Files/app/app.exe")]; !ok {
		t.Error("mounted top CIM lacks the middle layer's Files/app/app.exe")
	}
	if e := byPath[fsview.FoldPath("Hives/SOFTWARE_BASE")]; "sha256:"+e.SHA256 != sw(ls[2]) {
		t.Errorf("mounted Hives/SOFTWARE_BASE is %s, want the merged hive %s", e.SHA256, sw(ls[2]))
	}
}

func TestIntegrationCancelLeavesNothing(t *testing.T) {
	b := newBuilder(t)
	srcs, tars := sources(fixture.Chain(1), fixture.Uncompressed)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := srcs[0]
	src.Open = func(context.Context) (io.ReadCloser, error) {
		return buildertest.CancelAfter(bytes.NewReader(tars[0]), len(tars[0])/2, 0, cancel), nil
	}
	dir := t.TempDir()
	if _, err := b.BuildLayer(ctx, src, nil, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "layers" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if side, _ := os.ReadDir(filepath.Join(dir, "layers")); len(side) != 0 {
		t.Errorf("left behind side directories: %v", side)
	}
}

func TestIntegrationBlockBaseLayer(t *testing.T) {
	host := hcsshim.ProbeHost()
	if !host.BlockCIMWrite {
		t.Skipf("block CIMs not writable on Windows %s", host)
	}
	b := newBuilder(t, hcsshim.WithFormat(builder.FormatBlock), hcsshim.WithIntegrity(host.VerifiedCIMWrite))
	srcs, _ := sources(fixture.Chain(1), fixture.Zstd)
	dir := t.TempDir()
	l := buildChain(t, b, srcs, dir)[0]
	if host.VerifiedCIMWrite && len(l.IntegrityDigest) != 64 {
		t.Errorf("IntegrityDigest = %q", l.IntegrityDigest)
	}
	// hcsshim writes block CIMs where it cannot mount them (cimwriter.dll on
	// builds below 27766): the build above is checked, the mount skipped.
	got, err := winvalidate.MountedView(context.Background(), filepath.Join(l.CimDir, l.CimName), winvalidate.WithRootDigest(l.IntegrityDigest))
	if errors.Is(err, winvalidate.ErrMountUnsupported) {
		t.Skipf("built; cannot mount here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	want, err := portable.ExpectedView(context.Background(), []func() (io.ReadCloser, error){
		func() (io.ReadCloser, error) { return srcs[0].Open(context.Background()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := winvalidate.Compare(want, got)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}
