package registry

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"testing"

	"github.com/cimconv/cimconv/internal/registry/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BenchmarkOpenLayer streams a 32 MiB layer from a loopback registry
// through OpenLayer (auth transport, retry layer, hashing, counting) and,
// as the baseline, with a bare http.Get of the same blob. Compare the MB/s
// of the two sub-benchmarks: the ratio is the client's overhead.
func BenchmarkOpenLayer(b *testing.B) {
	host := registrytest.NewDistribution(b)
	layer := make([]byte, 32<<20)
	_, _ = rand.Read(layer)
	ref := host + "/bench/layer:1"
	registrytest.PushImage(b, ref, [][]byte{layer}, v1.Platform{OSVersion: "10.0.20348.1"})
	c, err := New()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	targets, err := c.Resolve(ctx, ref, v1.Platform{}, OSVersionPolicy{})
	if err != nil {
		b.Fatal(err)
	}
	tg, l := targets[0], targets[0].Layers[0]
	b.Run("OpenLayer", func(b *testing.B) {
		b.SetBytes(l.Size)
		for b.Loop() {
			rc, err := c.OpenLayer(ctx, tg, l)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				b.Fatal(err)
			}
			rc.Close()
		}
	})
	b.Run("http.Get", func(b *testing.B) {
		b.SetBytes(l.Size)
		u := "http://" + host + "/v2/bench/layer/blobs/" + l.Digest.String()
		for b.Loop() {
			resp, err := http.Get(u)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	})
}
