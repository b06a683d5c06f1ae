package convert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// memShared is an in-process SharedCache with single-owner claims, recording
// what the converter does with it.
type memShared struct {
	mu       sync.Mutex
	values   map[string][]byte
	claims   map[string]bool
	renewals map[string]int
	released []string
}

func newMemShared() *memShared {
	return &memShared{values: map[string][]byte{}, claims: map[string]bool{}, renewals: map[string]int{}}
}

func (m *memShared) Acquire(_ context.Context, key string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.values[key]; ok {
		return v, false, nil
	}
	m.claims[key] = true
	return nil, true, nil
}

func (m *memShared) Put(_ context.Context, key string, v []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.values[key] = v
	return nil
}

func (m *memShared) Release(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.claims, key)
	m.released = append(m.released, key)
	return nil
}

func (m *memShared) Renew(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.renewals[key]++
	return m.claims[key], nil
}

// A worker that builds a layer holds its claim for the whole build (renewed),
// stores the value after the artifact manifest (which references the blob)
// is pushed, then releases the claim; a
// second worker with an empty local cache adopts the value instead of
// building.
func TestSharedCacheClaimsRenewsAndAdopts(t *testing.T) {
	// Layer blobs are served slowly so that the build outlives several
	// renewal periods.
	slow := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && strings.Contains(r.URL.Path, "/win/") {
				time.Sleep(150 * time.Millisecond)
			}
			next.ServeHTTP(w, r)
		})
	}
	host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(slow))
	layers := layersOf(fixture.Chain(2))
	registrytest.PushImage(t, host+"/win/shared:1", layers, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"})
	shared := newMemShared()
	newConv := func() *convert.Converter {
		return sharedConverter(t, shared, convert.WithClaimRenewal(20*time.Millisecond))
	}
	res, err := newConv().Convert(context.Background(), convert.Request{Image: host + "/win/shared:1"})
	if err != nil {
		t.Fatal(err)
	}
	shared.mu.Lock()
	base := len(shared.values)
	renewed := 0
	for _, n := range shared.renewals {
		renewed += n
	}
	claimsLeft := len(shared.claims)
	released := len(shared.released)
	shared.mu.Unlock()
	if base != 1 {
		t.Fatalf("%d values stored, want 1 (the base layer, claimed while building the cached prefix)", base)
	}
	if renewed < 2 {
		t.Errorf("claims renewed %d times during a build of several renewal periods", renewed)
	}
	if claimsLeft != 0 || released != 1 {
		t.Errorf("claims left %d, released %d; want 0 and 1", claimsLeft, released)
	}
	if !res.Images[0].Layers[0].Built {
		t.Fatal("first worker did not build the base")
	}
	// Another worker, empty local cache, forced: the base comes from the
	// shared cache (fetched from the registry), the child is built.
	again, err := newConv().Convert(context.Background(), convert.Request{Image: host + "/win/shared:1", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	ls := again.Images[0].Layers
	if ls[0].Built || !ls[1].Built {
		t.Fatalf("second worker built [%v %v], want [false true]", ls[0].Built, ls[1].Built)
	}
	if again.Images[0].Artifact != res.Images[0].Artifact {
		t.Fatalf("artifact %s, want the same deterministic artifact %s", again.Images[0].Artifact, res.Images[0].Artifact)
	}
}

// storedRepos lists the repository each stored value names.
func (m *memShared) storedRepos(t *testing.T) []string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	var repos []string
	for _, raw := range m.values {
		var v struct {
			Repo string `json:"repo"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("shared value %s: %v", raw, err)
		}
		repos = append(repos, v.Repo)
	}
	return repos
}

// A shared value whose blob is gone (the repository it names deleted, or
// the blob deleted or garbage-collected) is stale, not a reason to fail: a
// worker without the layer in its local cache builds it, its value replaces
// the stale one, and the next worker adopts that. Failing (404, retry cannot
// help) would dead-letter every image on the chain, on every such worker,
// for good: nothing else replaces the value.
func TestSharedCacheStaleValueIsReplaced(t *testing.T) {
	for _, r := range registries {
		for _, how := range []string{"blob deleted", "repository deleted"} {
			t.Run(r.name+"/"+how, func(t *testing.T) {
				var repoGone atomic.Bool
				deletedRepo := func(next http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
						if repoGone.Load() && strings.HasPrefix(req.URL.Path, "/v2/win/a/") {
							registryError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry")
							return
						}
						next.ServeHTTP(w, req)
					})
				}
				host := r.start(t, registrytest.WithMiddleware(deletedRepo))
				layers := layersOf(fixture.Chain(2))
				registrytest.PushImage(t, host+"/win/a:1", layers, win(ltsc2022))
				registrytest.PushImage(t, host+"/win/b:1", layers, win(ltsc2022))
				shared := newMemShared()
				newConv := func() *convert.Converter { return sharedConverter(t, shared) }
				first, err := newConv().Convert(context.Background(), convert.Request{Image: host + "/win/a:1"})
				if err != nil {
					t.Fatal(err)
				}
				if got := shared.storedRepos(t); len(got) != 1 || got[0] != host+"/win/a" {
					t.Fatalf("after the first worker the shared cache names %v, want the base layer in %s/win/a", got, host)
				}
				switch how {
				case "blob deleted":
					deleteBlob(t, host, "win/a", first.Images[0].Layers[0].Blob)
				case "repository deleted":
					repoGone.Store(true)
				}

				res, err := newConv().Convert(context.Background(), convert.Request{Image: host + "/win/b:1"})
				if err != nil {
					t.Fatalf("a stale shared value failed the conversion of another image on the chain: %v", err)
				}
				if ls := res.Images[0].Layers; !ls[0].Built {
					t.Fatal("the base layer whose shared blob is gone was not built")
				}
				if got := shared.storedRepos(t); len(got) != 1 || got[0] != host+"/win/b" {
					t.Fatalf("shared cache names %v, want the rebuilt base layer in %s/win/b in place of the stale value", got, host)
				}
				again, err := newConv().Convert(context.Background(), convert.Request{Image: host + "/win/b:1", Force: true})
				if err != nil {
					t.Fatal(err)
				}
				if ls := again.Images[0].Layers; ls[0].Built {
					t.Fatal("the next worker built the base layer instead of adopting the value that replaced the stale one")
				}
			})
		}
	}
}

// deleteBlob deletes a blob from a repository through the registry API.
func deleteBlob(t *testing.T, host, repo, digest string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, fmt.Sprintf("http://%s/v2/%s/blobs/%s", host, repo, digest), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE blob %s from %s: %s", digest, repo, resp.Status)
	}
}

// A value is stored only once the artifact manifest referencing its blob is
// pushed: a conversion that fails before leaves its blob unreferenced, which
// a registry's garbage collection may delete, so it stores nothing and
// releases its claim; the next worker to claim the layer stores it.
func TestSharedValueStoredAfterTheManifest(t *testing.T) {
	var refuse atomic.Bool
	refuseManifests := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if refuse.Load() && req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/") {
				registryError(w, http.StatusBadRequest, "MANIFEST_INVALID", "manifest invalid")
				return
			}
			next.ServeHTTP(w, req)
		})
	}
	host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(refuseManifests))
	registrytest.PushImage(t, host+"/win/app:1", layersOf(fixture.Chain(2)), win(ltsc2022))
	refuse.Store(true)
	shared := newMemShared()
	newConv := func() *convert.Converter { return sharedConverter(t, shared) }
	if _, err := newConv().Convert(context.Background(), convert.Request{Image: host + "/win/app:1"}); err == nil {
		t.Fatal("conversion succeeded although its manifest was refused")
	}
	shared.mu.Lock()
	stored, claims, released := len(shared.values), len(shared.claims), len(shared.released)
	shared.mu.Unlock()
	if stored != 0 {
		t.Fatalf("%d values stored by a conversion whose manifest was never pushed, want 0", stored)
	}
	if claims != 0 || released != 1 {
		t.Fatalf("claims left %d, released %d; want 0 and 1", claims, released)
	}
	refuse.Store(false)
	res, err := newConv().Convert(context.Background(), convert.Request{Image: host + "/win/app:1"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Images[0].Layers[0].Built {
		t.Fatal("the next worker did not build the base layer: it adopted a value stored without a manifest")
	}
	if got := shared.storedRepos(t); len(got) != 1 || got[0] != host+"/win/app" {
		t.Fatalf("after the manifest was pushed the shared cache names %v, want the base layer in %s/win/app", got, host)
	}
}

// sharedConverter is one more worker on shared: a converter with a local
// cache and work dir of its own.
func sharedConverter(t *testing.T, shared convert.SharedCache, opts ...convert.Option) *convert.Converter {
	t.Helper()
	cache, err := convert.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return convert.New(fetchtest.NewRegistry(t), portable.New(), cache,
		append([]convert.Option{convert.WithWorkDir(t.TempDir()), convert.WithSharedCache(shared)}, opts...)...)
}

// registryError answers as a registry refusing a request: status and one
// error of the distribution API.
func registryError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, message)
}
