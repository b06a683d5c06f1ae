package convert_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
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
// stores the value after the blob is pushed, then releases the claim; a
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
		cache, err := convert.NewCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return convert.New(fetchtest.NewRegistry(t), portable.New(), cache, convert.WithWorkDir(t.TempDir()),
			convert.WithSharedCache(shared), convert.WithClaimRenewal(20*time.Millisecond))
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
