package wclayer_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// The benchmark layer: WCLAYER_BENCH_FILES files, WCLAYER_BENCH_MB MiB
// (default 2,000 and 64 MiB, to spare the shared CI machine; the issue's
// 20,000 files and 500 MiB: WCLAYER_BENCH_FILES=20000 WCLAYER_BENCH_MB=512).
var benchLayer = sync.OnceValues(func() ([]byte, []byte) {
	files, mb := envInt("WCLAYER_BENCH_FILES", 2000), envInt("WCLAYER_BENCH_MB", 64)
	var plain bytes.Buffer
	if err := fixture.Large(&plain, files, int64(mb)<<20, 1); err != nil {
		panic(err)
	}
	var gz bytes.Buffer
	if err := fixture.Compress(&gz, fixture.Gzip, func(w io.Writer) error { _, err := w.Write(plain.Bytes()); return err }); err != nil {
		panic(err)
	}
	return plain.Bytes(), gz.Bytes()
})

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkReader reads the whole layer (entries and data) with wclayer;
// BenchmarkTarBaseline does only archive/tar + sha256 over the same bytes.
// The ratio of the two is the reader's validation overhead.
func BenchmarkReader(b *testing.B) {
	plain, gz := benchLayer()
	for _, bc := range []struct {
		name string
		blob []byte
	}{{"uncompressed", plain}, {"gzip", gz}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			buf := make([]byte, 256<<10)
			for b.Loop() {
				r, err := wclayer.NewReader(bytes.NewReader(bc.blob), wclayer.WithBase(true))
				if err != nil {
					b.Fatal(err)
				}
				for {
					_, err := r.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func BenchmarkTarBaseline(b *testing.B) {
	plain, _ := benchLayer()
	b.SetBytes(int64(len(plain)))
	buf := make([]byte, 256<<10)
	for b.Loop() {
		h := sha256.New()
		tr := tar.NewReader(io.TeeReader(bytes.NewReader(plain), h))
		for {
			_, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, tr, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
