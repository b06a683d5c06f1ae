package snapshotter

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
)

// The artifact lookup of a manifest is shared by all its layers. When the
// pull that started it is cancelled, the lookup goes on for the other
// layers (bounded by the fast-path timeout); before, the first caller's
// cancellation was cached as the image's answer and every other layer fell
// through for the negative cache time (30 s).
func TestCancelledFirstLookupIsNotShared(t *testing.T) {
	release := make(chan struct{})
	var manifestGets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			manifestGets.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such manifest"}]}`, http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusOK) // the /v2/ ping
	}))
	defer srv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	root := t.TempDir()
	inner, err := NewCimFS(root)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.WithRetry(registry.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(inner, root, WithRegistry(reg), WithVerifier(trust.AllowUnsigned()), WithTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/x/y:v1"
	manifest := "sha256:" + hex64

	first, cancel := context.WithCancel(context.Background())
	go func() {
		for manifestGets.Load() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := s.resolveShared(first, ref, manifest); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	close(release)
	ctx, done := context.WithTimeout(context.Background(), 30*time.Second)
	defer done()
	_, err = s.resolveShared(ctx, ref, manifest)
	// (ggcr's transport error carries the cancellation as text only.)
	if err == nil || errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("next layer's lookup: err = %v, want the registry's answer (manifest unknown), not the first caller's cancellation", err)
	}
	if !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") && !strings.Contains(strings.ToLower(err.Error()), "not found") {
		t.Errorf("next layer's lookup: err = %v, want the registry's manifest-unknown answer", err)
	}
}
