package registrytest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// tarOf returns an uncompressed tar holding one regular file.
func tarOf(t testing.TB, name, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return buf.Bytes()
}

// Tar returns an uncompressed tar with one file (a stand-in layer for
// registry tests that do not parse layer contents; real Windows layer
// fixtures come from the wclayer fixture builder).
func Tar(t testing.TB, name, content string) []byte { return tarOf(t, name, content) }

// Gzip compresses b.
func Gzip(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return buf.Bytes()
}

// Zstd compresses b.
func Zstd(t testing.TB, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}
