package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is one of the two real registries the tests run against.
type testRegistry struct {
	name      string
	start     func(testing.TB, ...registrytest.Opt) string
	referrers bool // has the OCI 1.1 referrers API
}

var registries = []testRegistry{
	{"ggcr", registrytest.NewReferrersRegistry, true},
	{"distribution", registrytest.NewDistribution, false},
}

// forEachRegistry runs f as a subtest against each real registry.
func forEachRegistry(t *testing.T, f func(t *testing.T, r testRegistry)) {
	for _, r := range registries {
		t.Run(r.name, func(t *testing.T) { f(t, r) })
	}
}

// recordedSleeps replaces the client's sleep so retries cost no time and
// the requested delays can be asserted.
type recordedSleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *recordedSleeps) sleep(_ context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
	return nil
}

func (s *recordedSleeps) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// newTestClient returns a client whose retries do not sleep.
func newTestClient(t testing.TB, opts ...Option) (*Client, *recordedSleeps) {
	t.Helper()
	c, err := New(append([]Option{WithKeychain(anonymousKeychain{})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	s := &recordedSleeps{}
	c.sleep = s.sleep
	return c, s
}

type anonymousKeychain struct{}

func (anonymousKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

// requestCounter counts requests by "METHOD path-kind".
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int
	// log keeps "METHOD path?query" in order.
	log []string
}

func newRequestCounter() *requestCounter { return &requestCounter{n: map[string]int{}} }

func (c *requestCounter) record(r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[r.Method+" "+r.URL.Path]++
	c.log = append(c.log, r.Method+" "+r.URL.RequestURI())
}

func (c *requestCounter) count(method, path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method+" "+path]
}

func (c *requestCounter) matching(substr string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.log {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// windowsLayers: one gzip, one zstd, one plain layer.
func windowsLayers(t testing.TB, tag string) [][]byte {
	t.Helper()
	return [][]byte{
		registrytest.Gzip(t, registrytest.Tar(t, "Files/base.txt", "base "+tag)),
		registrytest.Zstd(t, registrytest.Tar(t, "Files/app.txt", strings.Repeat("app "+tag, 100))),
		registrytest.Tar(t, "Files/conf.txt", "conf "+tag),
	}
}

func registrytestRequestLog(c *requestCounter) registrytest.Opt {
	return registrytest.WithRequestLog(c.record)
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustRepo(t testing.TB, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustDigestRef(t testing.TB, s string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// newPushFixture is what the push tests start from: a fixture on r, a
// client made with opts, and the fixture's repository and its image for
// version, which artifacts are pushed for.
func newPushFixture(t *testing.T, r testRegistry, version string, opts ...Option) (*fixture, *Client, name.Repository, v1.Descriptor) {
	t.Helper()
	f := newFixture(t, r)
	c, _ := newTestClient(t, opts...)
	return f, c, mustRepo(t, f.repo), f.images[version]
}

// testBlob is a blob to push: its content, its descriptor, and an opener
// for PushBlob that counts how often the content was opened (a blob the
// registry has already, or mounts, is never opened).
type testBlob struct {
	data  []byte
	desc  v1.Descriptor
	opens int
}

func newTestBlob(data []byte) *testBlob {
	d, n, _ := v1.SHA256(bytes.NewReader(data))
	return &testBlob{data: data, desc: v1.Descriptor{Digest: d, Size: n}}
}

func (b *testBlob) open() (io.ReadCloser, error) {
	b.opens++
	return io.NopCloser(bytes.NewReader(b.data)), nil
}

// check fetches the blob from repo and fails the test, naming it what,
// unless its content is b's.
func (b *testBlob) check(ctx context.Context, t *testing.T, c *Client, repo name.Repository, what string) {
	t.Helper()
	rc, err := c.FetchBlob(ctx, repo, b.desc)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, b.data) {
		t.Fatalf("%s = %q, %v", what, got, err)
	}
}

// artifact builds an OCI artifact manifest referring to subject, with a
// config blob and one layer blob (returned so callers can push them).
type artifact struct {
	manifest []byte
	blobs    map[v1.Hash][]byte
	digest   v1.Hash
}

func newArtifact(t testing.TB, artifactType string, subject v1.Descriptor, payload string) artifact {
	t.Helper()
	cfg := []byte(`{"format":"test"}`)
	layer := []byte(payload)
	cd, _, _ := v1.SHA256(bytes.NewReader(cfg))
	ld, _, _ := v1.SHA256(bytes.NewReader(layer))
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIManifestSchema1,
		"artifactType":  artifactType,
		"config":        v1.Descriptor{MediaType: types.MediaType(artifactType), Digest: cd, Size: int64(len(cfg))},
		"layers":        []v1.Descriptor{{MediaType: "application/vnd.cimconv.test.layer", Digest: ld, Size: int64(len(layer))}},
		"subject":       v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		"annotations":   map[string]string{"io.cimconv.test.payload": payload},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d, _, _ := v1.SHA256(bytes.NewReader(raw))
	return artifact{manifest: raw, blobs: map[v1.Hash][]byte{cd: cfg, ld: layer}, digest: d}
}

func (a artifact) push(ctx context.Context, c *Client, repo name.Repository, subject v1.Descriptor) (v1.Hash, error) {
	for d, b := range a.blobs {
		desc := v1.Descriptor{Digest: d, Size: int64(len(b))}
		if err := c.PushBlob(ctx, repo, desc, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }); err != nil {
			return v1.Hash{}, err
		}
	}
	return c.PushArtifact(ctx, repo, a.manifest, types.OCIManifestSchema1, subject)
}
