//go:build linux

package snapshotter_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// TestNodeBench is bench/node.sh (skipped unless CIMCONV_BENCH_NODE=1): node
// time-to-ready of a 3-layer image, in one run, through a real containerd:
//
//	fast path: containerd pull with the snapshotter (artifact download and
//	           placement; no layer blob fetched)
//	import:    what the import path does on this machine for the same image:
//	           download every layer blob, decompress it and build its CIM
//	           with the portable builder (the stand-in for the cimfs differ)
//
// It prints both times, fast/import (target <= 0.3) and the bytes each
// downloaded. Sizes: CIMCONV_BENCH_BASE_MB (400), CIMCONV_BENCH_APP_MB (100).
func TestNodeBench(t *testing.T) {
	if os.Getenv("CIMCONV_BENCH_NODE") == "" {
		t.Skip("benchmark: run bench/node.sh")
	}
	baseMB, appMB := envInt("CIMCONV_BENCH_BASE_MB", 400), envInt("CIMCONV_BENCH_APP_MB", 100)
	e := newEnv(t)
	e.timeout = 10 * time.Minute
	e.stopSn()
	e.startSnapshotter()

	var stored [][]byte
	for i, mb := range []int{baseMB, appMB, appMB} {
		var tarBuf, gz bytes.Buffer
		files := mb * 20
		if err := fixture.Large(&tarBuf, files, int64(mb)<<20, int64(i+1)); err != nil {
			t.Fatal(err)
		}
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
		if _, err := io.Copy(zw, &tarBuf); err != nil {
			t.Fatal(err)
		}
		zw.Close()
		stored = append(stored, gz.Bytes())
	}
	img := e.pushBytes("bench/node", stored)
	t.Logf("setup: image %s, %d+%d+%d MiB uncompressed; converting", img.ref, baseMB, appMB, appMB)
	e.convert(img)

	// Import path: download + decompress + portable build, layer by layer.
	ref, _ := name.ParseReference(img.ref)
	targets, err := e.reg.Resolve(context.Background(), ref.String(), v1.Platform{OS: "windows", Architecture: "amd64"}, registry.OSVersionPolicy{Mode: "all"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var importBytes int64
	start := time.Now()
	var parent *builder.BuiltLayer
	for i, l := range targets[0].Layers {
		l := l
		src := builder.LayerSource{Digest: l.Digest.String(), DiffID: l.DiffID.String(), ChainID: img.chainIDs[i], MediaType: string(l.MediaType), Size: l.Size,
			Open: func(ctx context.Context) (io.ReadCloser, error) {
				return e.reg.FetchBlob(ctx, ref.Context(), v1.Descriptor{Digest: l.Digest, Size: l.Size})
			}}
		importBytes += l.Size
		b, err := portable.New().BuildLayer(context.Background(), src, parent, dir)
		if err != nil {
			t.Fatalf("import layer %d: %v", i, err)
		}
		parent = b
	}
	importTime := time.Since(start)

	ctx := e.ctx()
	start = time.Now()
	e.pull(ctx, img)
	fastTime := time.Since(start)
	if got := e.metric(metrics.SnapshotterFastPathTotal, "", ""); got != 3 {
		t.Fatalf("fast path placed %v layers, want 3 (falls %v)", got, e.fallSummary())
	}
	if n := e.layerBlobGets(img); n != 0 {
		t.Fatalf("the fast path pull downloaded %d layer blobs", n)
	}
	fastBytes := int64(e.metric(metrics.SnapshotterBytesTotal, "", ""))
	fmt.Printf("node time-to-ready, 3 layers (%d+%d+%d MiB uncompressed):\n", baseMB, appMB, appMB)
	fmt.Printf("  import path (download + decompress + portable build): %8.2f s  %6.1f MiB downloaded\n", importTime.Seconds(), float64(importBytes)/(1<<20))
	fmt.Printf("  fast path (containerd pull via cimconv snapshotter):  %8.2f s  %6.1f MiB downloaded (artifact blobs)\n", fastTime.Seconds(), float64(fastBytes)/(1<<20))
	fmt.Printf("  fast/import = %.2f (target <= 0.30)\n", fastTime.Seconds()/importTime.Seconds())
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}
