package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fixture: three Windows images (17763, 20348, 26100) in one index with a
// linux manifest and an attestation, plus a linux-only image.
type fixture struct {
	host    string
	repo    string
	images  map[string]v1.Descriptor // os.version -> descriptor
	layers  map[string][][]byte      // os.version -> stored layers
	index   v1.Descriptor
	linux   v1.Descriptor
	counter *requestCounter
}

var fixtureVersions = []string{"10.0.17763.5000", "10.0.20348.2031", "10.0.26100.100"}

func newFixture(t *testing.T, r testRegistry, opts ...registrytest.Opt) *fixture {
	t.Helper()
	f := &fixture{images: map[string]v1.Descriptor{}, layers: map[string][][]byte{}, counter: newRequestCounter()}
	f.host = r.start(t, append(opts, registrytest.WithRequestLog(f.counter.record))...)
	f.repo = f.host + "/win/app"
	var descs []v1.Descriptor
	for _, v := range fixtureVersions {
		f.layers[v] = windowsLayers(t, v)
		d := registrytest.PushImage(t, f.repo+":"+v, f.layers[v], v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: v})
		f.images[v] = d
		descs = append(descs, d)
	}
	f.index = registrytest.PushIndex(t, f.repo+":multi", descs...)
	f.linux = registrytest.PushImage(t, f.host+"/lin/app:latest", [][]byte{registrytest.Tar(t, "etc/hosts", "x")}, v1.Platform{OS: "linux", Architecture: "amd64"})
	return f
}

func TestResolve(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		f := newFixture(t, r)
		c, _ := newTestClient(t)
		ctx := context.Background()
		tests := []struct {
			name     string
			ref      string
			platform v1.Platform
			policy   string
			want     []string // os.versions, in index order
			wantErr  error
		}{
			{"index all", f.repo + ":multi", v1.Platform{}, "all", fixtureVersions, nil},
			{"index by digest", f.repo + "@" + f.index.Digest.String(), v1.Platform{}, "all", fixtureVersions, nil},
			{"exact full", f.repo + ":multi", v1.Platform{}, "10.0.20348.2031", []string{"10.0.20348.2031"}, nil},
			{"exact build", f.repo + ":multi", v1.Platform{}, "17763", []string{"10.0.17763.5000"}, nil},
			{"compatible 26100", f.repo + ":multi", v1.Platform{}, "compatible:26100", []string{"10.0.20348.2031", "10.0.26100.100"}, nil},
			{"compatible 20348", f.repo + ":multi", v1.Platform{}, "compatible:20348", []string{"10.0.20348.2031"}, nil},
			{"compatible 17763", f.repo + ":multi", v1.Platform{}, "compatible:17763", []string{"10.0.17763.5000"}, nil},
			{"no build", f.repo + ":multi", v1.Platform{}, "19041", nil, ErrNoMatch},
			{"no arch", f.repo + ":multi", v1.Platform{Architecture: "arm64"}, "all", nil, ErrNoMatch},
			{"plain manifest tag", f.repo + ":10.0.20348.2031", v1.Platform{}, "all", []string{"10.0.20348.2031"}, nil},
			{"plain manifest policy miss", f.repo + ":10.0.20348.2031", v1.Platform{}, "17763", nil, ErrNoMatch},
			{"linux image", f.host + "/lin/app:latest", v1.Platform{}, "all", nil, ErrNotWindows},
			{"linux platform", f.repo + ":multi", v1.Platform{OS: "linux"}, "all", nil, ErrNotWindows},
			{"missing tag", f.repo + ":nope", v1.Platform{}, "all", nil, ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				p, err := ParseOSVersionPolicy(tt.policy)
				if err != nil {
					t.Fatal(err)
				}
				targets, err := c.Resolve(ctx, tt.ref, tt.platform, p)
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("Resolve error = %v, want %v", err, tt.wantErr)
					}
					if errdefs.IsUnavailable(err) {
						t.Fatalf("Resolve error %v marked transient", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				var got []string
				for _, tg := range targets {
					got = append(got, tg.Platform.OSVersion)
					checkTarget(t, f, tg)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("Resolve picked %v, want %v", got, tt.want)
				}
			})
		}
		// An index with no Windows entry: ErrNotWindows listing its
		// platforms, attestations left out.
		linuxIdx := registrytest.PushIndex(t, f.host+"/lin/app:multi")
		_, err := c.Resolve(ctx, f.host+"/lin/app@"+linuxIdx.Digest.String(), v1.Platform{}, OSVersionPolicy{})
		if !errors.Is(err, ErrNotWindows) || !strings.Contains(err.Error(), "linux/amd64") || strings.Contains(err.Error(), "unknown") {
			t.Fatalf("linux-only index: %v, want ErrNotWindows listing linux/amd64 only", err)
		}
		// The ErrNoMatch message lists what the index had.
		_, err = c.Resolve(ctx, f.repo+":multi", v1.Platform{}, OSVersionPolicy{Mode: OSVersionExact, Version: "19041"})
		for _, v := range fixtureVersions {
			if !strings.Contains(err.Error(), v) {
				t.Errorf("ErrNoMatch message %q does not list %s", err, v)
			}
		}
	})
}

// checkTarget compares a resolved target with what the fixture pushed.
func checkTarget(t *testing.T, f *fixture, tg Target) {
	t.Helper()
	want, ok := f.images[tg.Platform.OSVersion]
	if !ok {
		t.Fatalf("target with unexpected os.version %q", tg.Platform.OSVersion)
	}
	if tg.Descriptor.Digest != want.Digest || tg.Ref.DigestStr() != want.Digest.String() || tg.Descriptor.Size != want.Size {
		t.Fatalf("target %s (%d bytes), want %s (%d bytes)", tg.Ref, tg.Descriptor.Size, want.Digest, want.Size)
	}
	if tg.Platform.OS != "windows" || tg.Platform.Architecture != "amd64" {
		t.Fatalf("target platform %+v", tg.Platform)
	}
	stored := f.layers[tg.Platform.OSVersion]
	if len(tg.Layers) != len(stored) {
		t.Fatalf("target has %d layers, want %d", len(tg.Layers), len(stored))
	}
	for i, l := range tg.Layers {
		d, n, _ := v1.SHA256(bytes.NewReader(stored[i]))
		if l.Digest != d || l.Size != n || l.DiffID != tg.Config.RootFS.DiffIDs[i] || l.Foreign {
			t.Fatalf("layer %d = %+v, want digest %s size %d", i, l, d, n)
		}
	}
	if l := tg.Layers[2]; l.DiffID != l.Digest {
		t.Fatalf("uncompressed layer diffID %s != digest %s", l.DiffID, l.Digest)
	}
	if l := tg.Layers[0]; l.DiffID == l.Digest {
		t.Fatalf("gzip layer diffID equals its digest")
	}
}

func TestOpenLayer(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		f := newFixture(t, r)
		var counted atomic.Int64
		c, _ := newTestClient(t, WithByteCounter(func(n int64) { counted.Add(n) }))
		ctx := context.Background()
		targets, err := c.Resolve(ctx, f.repo+":multi", v1.Platform{}, OSVersionPolicy{Mode: OSVersionExact, Version: "20348"})
		if err != nil {
			t.Fatal(err)
		}
		tg := targets[0]
		counted.Store(0)
		var total int64
		for i, l := range tg.Layers {
			rc, err := c.OpenLayer(ctx, tg, l)
			if err != nil {
				t.Fatalf("OpenLayer %d: %v", i, err)
			}
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatalf("reading layer %d: %v", i, err)
			}
			if err := rc.Close(); err != nil {
				t.Fatalf("closing layer %d: %v", i, err)
			}
			if !bytes.Equal(got, f.layers["10.0.20348.2031"][i]) {
				t.Fatalf("layer %d bytes differ from what was pushed", i)
			}
			total += int64(len(got))
		}
		if counted.Load() != total {
			t.Fatalf("byte counter saw %d bytes, streams had %d", counted.Load(), total)
		}
	})
}

// corruptBlobs rewrites GET responses for blob paths containing target:
// flips the last byte (mode "flip"), drops the last byte ("truncate") or
// appends one ("extend").
func corruptBlobs(target *atomic.Value, mode string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d, _ := target.Load().(string)
			if r.Method != http.MethodGet || d == "" || !strings.HasSuffix(r.URL.Path, "/blobs/"+d) {
				next.ServeHTTP(w, r)
				return
			}
			rec := &bufferedResponse{header: http.Header{}, code: http.StatusOK}
			next.ServeHTTP(rec, r)
			b := rec.body.Bytes()
			switch mode {
			case "flip":
				b[len(b)-1] ^= 0xff
			case "truncate":
				b = b[:len(b)-1]
			case "extend":
				b = append(b, 0)
			}
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.Header().Del("Content-Length")
			w.WriteHeader(rec.code)
			_, _ = w.Write(b)
		})
	}
}

type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(code int)        { b.code = code }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }

func TestOpenLayerCorrupt(t *testing.T) {
	for _, mode := range []string{"flip", "truncate", "extend"} {
		t.Run(mode, func(t *testing.T) {
			forEachRegistry(t, func(t *testing.T, r testRegistry) {
				var target atomic.Value
				f := newFixture(t, r, registrytest.WithMiddleware(corruptBlobs(&target, mode)))
				c, _ := newTestClient(t)
				ctx := context.Background()
				targets, err := c.Resolve(ctx, f.repo+":10.0.26100.100", v1.Platform{}, OSVersionPolicy{})
				if err != nil {
					t.Fatal(err)
				}
				l := targets[0].Layers[1]
				target.Store(l.Digest.String())
				rc, err := c.OpenLayer(ctx, targets[0], l)
				if err != nil {
					t.Fatalf("OpenLayer: %v", err)
				}
				_, err = io.ReadAll(rc)
				if !errors.Is(err, ErrDigestMismatch) {
					t.Fatalf("reading corrupt layer: err = %v, want ErrDigestMismatch", err)
				}
				if errdefs.IsUnavailable(err) {
					t.Fatalf("digest mismatch marked transient: %v", err)
				}
				if err := rc.Close(); !errors.Is(err, ErrDigestMismatch) {
					t.Fatalf("Close after corrupt read = %v, want ErrDigestMismatch", err)
				}
				// The other layers are intact.
				rc, err = c.OpenLayer(ctx, targets[0], targets[0].Layers[0])
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadAll(rc); err != nil {
					t.Fatalf("intact layer: %v", err)
				}
				rc.Close()
			})
		})
	}
}
