package hcsshim

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/cimconv/cimconv/internal/builder"
)

// fakeImporter stands in for CimFS: it consumes the tar like hcsshim does and
// writes files shaped like CimFS's (a .cim with a real header, region and
// objectid files with a fresh GUID) and hcsshim's side files (Hives/*_BASE,
// layout for a base layer, a merged base hive for each delta hive).
type fakeImporter struct {
	failAfterFiles error // written files, then this error
	n              atomic.Int32
	mu             sync.Mutex
	calls          []fakeCall
}

func (f *fakeImporter) record(c fakeCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

type fakeCall struct {
	layerPath        string
	cimPath          string
	parentLayerPaths []string
	parentCimPaths   []string
}

func (f *fakeImporter) importForked(ctx context.Context, r io.Reader, layerPath, cimPath string, parentLayerPaths, parentCimPaths []string) error {
	f.record(fakeCall{layerPath, cimPath, parentLayerPaths, parentCimPaths})
	deltas, err := readLayerTar(ctx, r)
	if err != nil {
		return err
	}
	guid := fmt.Sprintf("%08x-0000-0000-0000-000000000000", f.n.Add(1))
	dir := filepath.Dir(cimPath)
	runtime.Gosched()
	var hdr [32]byte
	copy(hdr[:], "cimfile0")
	binary.LittleEndian.PutUint32(hdr[16:], 3)
	binary.LittleEndian.PutUint32(hdr[20:], 0)
	for name, data := range map[string][]byte{
		filepath.Base(cimPath):    hdr[:],
		"region_" + guid + "_0":   []byte("region"),
		"objectid_" + guid + "_0": []byte("objectid"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	if err := writeSide(layerPath, parentLayerPaths, deltas); err != nil {
		return err
	}
	return f.failAfterFiles
}

func (f *fakeImporter) importBlock(ctx context.Context, r io.Reader, blockPath string, parents []string, integrity, vhdFooter bool) (string, error) {
	f.record(fakeCall{filepath.Dir(blockPath), blockPath, parents, nil})
	deltas, err := readLayerTar(ctx, r)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(blockPath, []byte("block"), 0o644); err != nil {
		return "", err
	}
	if err := writeSide(filepath.Dir(blockPath), parents, deltas); err != nil {
		return "", err
	}
	if f.failAfterFiles != nil {
		return "", f.failAfterFiles
	}
	if integrity {
		sum := sha256.Sum256([]byte(blockPath))
		return hex.EncodeToString(sum[:]), nil
	}
	return "", nil
}

// readLayerTar returns the contents of the layer's Hives/*_DELTA files.
func readLayerTar(ctx context.Context, r io.Reader) (map[string][]byte, error) {
	deltas := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return deltas, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		if name, ok := strings.CutPrefix(h.Name, "Hives/"); ok && strings.HasSuffix(name, "_DELTA") {
			deltas[strings.TrimSuffix(name, "_DELTA")] = b
		}
	}
}

// writeSide imitates hcsshim: a base layer gets every Hives/*_BASE and
// layout; a child gets a merged base hive (parent base + delta) for each of
// its delta hives, and fails like ORMergeHives when the parent has no base.
func writeSide(layerPath string, parents []string, deltas map[string][]byte) error {
	if err := os.MkdirAll(filepath.Join(layerPath, "Hives"), 0o755); err != nil {
		return err
	}
	if len(parents) == 0 {
		for _, h := range baseHives {
			if err := os.WriteFile(filepath.Join(layerPath, "Hives", h), []byte(h+"@base"), 0o644); err != nil {
				return err
			}
		}
		return os.WriteFile(filepath.Join(layerPath, "layout"), []byte("vhd-with-hives\n"), 0o644)
	}
	for name, delta := range deltas {
		base := name + "_BASE"
		if name == "DEFAULTUSER" {
			base = "DEFAULTUSER_BASE"
		}
		parentBase, err := os.ReadFile(filepath.Join(parents[0], "Hives", base))
		if err != nil {
			return fmt.Errorf("failed to open base hive: %w", err)
		}
		if err := os.WriteFile(filepath.Join(layerPath, "Hives", base), append(parentBase, delta...), 0o644); err != nil {
			return err
		}
	}
	return nil
}

type tarFile struct{ name, body string }

func layerTar(t testing.TB, files ...tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t testing.TB, kind string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch kind {
	case "gzip":
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "zstd":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
	default:
		return b
	}
	return buf.Bytes()
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// source makes a LayerSource for tarball compressed with kind.
func source(t testing.TB, kind, chainSeed string, tarball []byte) builder.LayerSource {
	blob := compress(t, kind, tarball)
	return builder.LayerSource{
		Digest:  digestOf(blob),
		DiffID:  digestOf(tarball),
		ChainID: digestOf([]byte(chainSeed)),
		Size:    int64(len(blob)),
		Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(blob)), nil
		},
	}
}

var capableHost = HostInfo{Major: 10, Build: 20348, Revision: 2031, CimFS: true}

func newTestBuilder(t testing.TB, imp importer, opts ...Option) *hcsBuilder {
	t.Helper()
	cfg, err := newConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	host := capableHost
	host.BlockCIMWrite, host.VerifiedCIMWrite = true, true
	b, err := newBuilder(cfg, host, imp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
