package fetch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/fetch"
	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// converted pushes a 2-layer image to a registry (wrapped by mw) and converts it.
func converted(t *testing.T, mw func(http.Handler) http.Handler) (host, image string) {
	t.Helper()
	var opts []registrytest.Opt
	if mw != nil {
		opts = append(opts, registrytest.WithMiddleware(mw))
	}
	host = registrytest.NewReferrersRegistry(t, opts...)
	var layers [][]byte
	for _, l := range fixture.Chain(2) {
		layers = append(layers, l.Bytes(fixture.Gzip))
	}
	image = host + "/win/app:1"
	registrytest.PushImage(t, image, layers, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"})
	cache, err := convert.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := fetchtest.NewRegistry(t)
	if _, err := convert.New(reg, portable.New(), cache, convert.WithWorkDir(t.TempDir())).Convert(context.Background(), convert.Request{Image: image}); err != nil {
		t.Fatal(err)
	}
	return host, image
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestFetchLayout(t *testing.T) {
	_, image := converted(t, nil)
	dest := t.TempDir()
	res, err := fetch.New(fetchtest.NewRegistry(t), nil).Fetch(context.Background(), image, fetch.Options{Dest: dest, NodeBuild: "10.0.20348.2340", Verifier: trust.AllowUnsigned()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Layers) != 2 || res.Builder != "portable" || res.Entries == 0 {
		t.Fatalf("result %+v", res)
	}
	for _, l := range res.Layers {
		if filepath.Dir(l.Cim) != filepath.Join(dest, fetch.CimDirName) {
			t.Errorf("CIM %s not in %s", l.Cim, fetch.CimDirName)
		}
		if _, err := os.Stat(filepath.Join(l.SideDir, "Hives", "SYSTEM_BASE")); err != nil {
			t.Errorf("side files of %s: %v", l.ChainID, err)
		}
	}
	// Fetching again (a second image on the same chain) is a no-op for
	// files already there and leaves no staging directory behind.
	before := len(entries(t, dest))
	if _, err := fetch.New(fetchtest.NewRegistry(t), nil).Fetch(context.Background(), image, fetch.Options{Dest: dest, Verifier: trust.AllowUnsigned()}); err != nil {
		t.Fatal(err)
	}
	if after := entries(t, dest); len(after) != before {
		t.Fatalf("second fetch: %d files, want %d", len(after), before)
	}
}

func TestFetchRefusals(t *testing.T) {
	t.Run("no artifact", func(t *testing.T) {
		host := registrytest.NewReferrersRegistry(t)
		image := host + "/win/plain:1"
		registrytest.PushImage(t, image, [][]byte{fixture.BaseLayer().Bytes(fixture.Gzip)}, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"})
		_, err := fetch.New(fetchtest.NewRegistry(t), nil).Fetch(context.Background(), image, fetch.Options{Dest: t.TempDir(), Verifier: trust.AllowUnsigned()})
		if !errors.Is(err, fetch.ErrNoArtifact) {
			t.Fatalf("err = %v, want ErrNoArtifact", err)
		}
	})
	t.Run("node build older than the image", func(t *testing.T) {
		_, image := converted(t, nil)
		_, err := fetch.New(fetchtest.NewRegistry(t), nil).Fetch(context.Background(), image, fetch.Options{Dest: t.TempDir(), NodeBuild: "10.0.17763.1", Verifier: trust.AllowUnsigned()})
		if err == nil {
			t.Fatal("a 17763 node accepted a 20348 image")
		}
	})
	t.Run("tampered layer blob", func(t *testing.T) {
		// Once armed, every CIM layer blob is served with one byte flipped.
		var armed atomic.Bool
		mw := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !armed.Load() || !strings.Contains(r.URL.Path, "/blobs/sha256:") || r.Method != http.MethodGet {
					next.ServeHTTP(w, r)
					return
				}
				next.ServeHTTP(&flipWriter{ResponseWriter: w}, r)
			})
		}
		_, image := converted(t, mw)
		armed.Store(true)
		dest := t.TempDir()
		_, err := fetch.New(fetchtest.NewRegistry(t), nil).Fetch(context.Background(), image, fetch.Options{Dest: dest, Verifier: trust.AllowUnsigned()})
		if !errors.Is(err, registry.ErrDigestMismatch) {
			t.Fatalf("err = %v, want a digest mismatch", err)
		}
		if left := entries(t, dest); len(left) != 0 {
			t.Fatalf("a failed fetch placed %v", left)
		}
	})
}

// TestFetchRefusesForeignChainIDs: the chainID names a layer's directory
// in DEST, so an artifact (accepted unsigned, as under --trust-unsigned)
// whose config gives a layer another chainID than the image's is refused
// and nothing is written, inside DEST or beside it. The path-shaped chainID
// has the length of a digest: it once passed Validate and put the layer's
// side files next to DEST.
func TestFetchRefusesForeignChainIDs(t *testing.T) {
	tests := []struct {
		name    string
		chainID string
	}{
		{"path", "sha256:../../../escaped-" + strings.Repeat("x", 47)},
		{"another chain's", builder.ChainID("sha256:"+strings.Repeat("0", 64), "sha256:"+strings.Repeat("1", 64))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, image := converted(t, nil)
			reg := fetchtest.NewRegistry(t)
			repushNewer(t, reg, image, func(c *artifact.Config) { c.Layers[1].ChainID = tt.chainID })
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest")
			_, err := fetch.New(reg, nil).Fetch(context.Background(), image, fetch.Options{Dest: dest, Verifier: trust.AllowUnsigned()})
			if err == nil || !strings.Contains(err.Error(), "chainID") {
				t.Fatalf("Fetch of an artifact with layer 1 chainID %q = %v; want a chainID refusal", tt.chainID, err)
			}
			if written := entries(t, parent); len(written) != 0 {
				t.Fatalf("a refused fetch into %s wrote %v", dest, written)
			}
		})
	}
}

// repushNewer pushes a copy of image's (only) artifact whose config edit
// changed, ranked first by a newer created annotation.
func repushNewer(t *testing.T, reg *registry.Client, image string, edit func(*artifact.Config)) {
	t.Helper()
	ctx := context.Background()
	subject := resolveDigest(t, reg, image)
	repo := subject.Context()
	descs, err := reg.Referrers(ctx, subject, artifact.ArtifactType)
	if err != nil || len(descs) != 1 {
		t.Fatalf("referrers of %s: %v, %v", subject, descs, err)
	}
	raw, _, err := reg.FetchManifest(ctx, repo.Digest(descs[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	cb, err := reg.ReadBlob(ctx, repo, m.Config, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	var cfg artifact.Config
	if err := json.Unmarshal(cb, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(&cfg)
	// Marshalled without Validate: the registry holds what an attacker pushes.
	ncb, err := json.Marshal(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	h, n, _ := v1.SHA256(bytes.NewReader(ncb))
	m.Config = v1.Descriptor{MediaType: artifact.ArtifactType, Digest: h, Size: n}
	if err := reg.PushBlob(ctx, repo, m.Config, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(ncb)), nil }); err != nil {
		t.Fatal(err)
	}
	m.Annotations[artifact.AnnotationCreated] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	nraw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.PushArtifact(ctx, repo, nraw, types.OCIManifestSchema1, *m.Subject); err != nil {
		t.Fatal(err)
	}
}

// flipWriter flips the 100th byte of a response body.
type flipWriter struct {
	http.ResponseWriter
	n int
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if f.n <= 100 && f.n+len(p) > 100 {
		q := append([]byte(nil), p...)
		q[100-f.n] ^= 0xff
		p = q
	}
	f.n += len(p)
	return f.ResponseWriter.Write(p)
}
