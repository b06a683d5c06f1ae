package convert_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// noisyBuilder wraps the portable builder and adds random bytes to every
// layer it builds (a side file), as a builder whose output is not
// reproducible (hcsshim) does. It counts builds per chainID. It is not
// TwoPhase, so every build goes through BuildLayer.
type noisyBuilder struct {
	inner  *portable.Builder
	mu     sync.Mutex
	builds map[string]int
}

func (b *noisyBuilder) Capabilities() builder.Capabilities {
	caps := b.inner.Capabilities()
	caps.Deterministic = false
	return caps
}

func (b *noisyBuilder) BuildLayer(ctx context.Context, l builder.LayerSource, parent *builder.BuiltLayer, dir string) (*builder.BuiltLayer, error) {
	bl, err := b.inner.BuildLayer(ctx, l, parent, dir)
	if err != nil {
		return nil, err
	}
	if bl.SideDir == "" {
		bl.SideDir = builder.SideDir(dir, bl.ChainID)
		if err := os.MkdirAll(bl.SideDir, 0o755); err != nil {
			return nil, err
		}
	}
	noise := make([]byte, 32)
	rand.Read(noise)
	// Named after the layer: a child carries its parent's side files (hard
	// links), which must not be written through.
	name := "noise-" + strings.TrimPrefix(bl.ChainID, "sha256:")[:12]
	if err := os.WriteFile(filepath.Join(bl.SideDir, name), noise, 0o644); err != nil {
		return nil, err
	}
	bl.SideFiles = append(bl.SideFiles, name)
	sort.Strings(bl.SideFiles)
	b.mu.Lock()
	b.builds[bl.ChainID]++
	b.mu.Unlock()
	return bl, nil
}

// getBlob reads a blob or manifest straight from the registry's HTTP API
// (not through the registry client, which checks digests itself).
func getBlob(t *testing.T, host, repo, kind, digest string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/%s/%s/%s", host, repo, kind, digest), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s %s: %v %s", kind, digest, err, resp.Status)
	}
	return b
}

// checkPushed verifies that every blob the artifact lists is in the
// registry with the bytes its digest names.
func checkPushed(t *testing.T, host, repo, artifact string) []v1.Descriptor {
	t.Helper()
	raw := getBlob(t, host, repo, "manifests", artifact)
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		b := getBlob(t, host, repo, "blobs", d.Digest.String())
		sum := sha256.Sum256(b)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != d.Digest.String() || int64(len(b)) != d.Size {
			t.Errorf("%s: blob %s holds %d bytes hashing to %s", repo, d.Digest, len(b), got)
		}
	}
	return m.Layers
}

// TestConcurrentConversionsBuildASharedLayerOnce: two conversions in one
// process (the worker's concurrency 2) of images sharing a base, with a
// builder whose output differs on every build: the base is built once, both
// artifacts list that one build, and every pushed blob is the bytes its
// digest names. Many rounds, each with an empty cache.
func TestConcurrentConversionsBuildASharedLayerOnce(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	base := fixture.BaseLayer().Bytes(fixture.Gzip)
	images := []string{"win/one", "win/two"}
	registrytest.PushImage(t, host+"/"+images[0]+":1", [][]byte{base, fixture.AppLayer(1).Bytes(fixture.Gzip)}, win(ltsc2022))
	registrytest.PushImage(t, host+"/"+images[1]+":1", [][]byte{base, fixture.AppLayer(2).Bytes(fixture.Zstd)}, win(ltsc2022))
	reg := fetchtest.NewRegistry(t)
	rounds := 20
	if testing.Short() {
		rounds = 4
	}
	for r := 0; r < rounds; r++ {
		cache, err := convert.NewCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		b := &noisyBuilder{inner: portable.New(), builds: map[string]int{}}
		conv := convert.New(reg, b, cache, convert.WithWorkDir(t.TempDir()))
		var wg sync.WaitGroup
		res := make([]*convert.Result, len(images))
		errs := make([]error, len(images))
		for i, im := range images {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i], errs[i] = conv.Convert(context.Background(), convert.Request{Image: host + "/" + im + ":1", Force: true})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: convert %s: %v", r, images[i], err)
			}
		}
		baseChain := res[0].Images[0].Layers[0].ChainID
		if n := b.builds[baseChain]; n != 1 {
			t.Errorf("round %d: the shared base layer was built %d times, want 1", r, n)
		}
		var baseBlobs []string
		for i, im := range images {
			layers := checkPushed(t, host, im, res[i].Images[0].Artifact)
			baseBlobs = append(baseBlobs, layers[0].Digest.String())
		}
		if baseBlobs[0] != baseBlobs[1] {
			t.Errorf("round %d: the artifacts list different base blobs %v: two builds of one layer", r, baseBlobs)
		}
		if t.Failed() {
			return
		}
	}
}
