package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/registry/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// A referrers API answering in pages (Link: rel="next") is followed to the
// end, and filtering happens client-side when the server ignores it.
func TestReferrersPagination(t *testing.T) {
	subject := "sha256:" + strings.Repeat("c", 64)
	page := func(types_ ...string) []byte {
		idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
		for i, at := range types_ {
			idx.Manifests = append(idx.Manifests, v1.Descriptor{
				MediaType: types.OCIManifestSchema1, ArtifactType: at, Size: 1,
				Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(rune('0'+len(types_)+i)), 64)},
			})
		}
		b, _ := json.Marshal(idx)
		return b
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/repo/referrers/"+subject {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Content-Type", string(types.OCIImageIndex))
		if r.URL.Query().Get("page") == "2" {
			_, _ = w.Write(page(testArtifactType, "other"))
			return
		}
		w.Header().Set("Link", `</v2/repo/referrers/`+subject+`?page=2>; rel="next"`)
		_, _ = w.Write(page(testArtifactType))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, _ := newTestClient(t)
	ref := mustDigestRef(t, strings.TrimPrefix(srv.URL, "http://")+"/repo@"+subject)
	got, err := c.Referrers(context.Background(), ref, testArtifactType)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("Referrers over two pages = %d descriptors, want 2 of %s", len(got), testArtifactType)
	}
	all, err := c.Referrers(context.Background(), ref, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("unfiltered = %d, %v; want 3", len(all), err)
	}
}

// A registry that declines a cross-repository mount (202 with an upload
// session instead of 201) gets the blob uploaded into that session.
func TestPushBlobMountDeclined(t *testing.T) {
	counter := newRequestCounter()
	declineMounts := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if q := r.URL.Query(); q.Has("mount") {
				q.Del("mount")
				q.Del("from")
				r.URL.RawQuery = q.Encode()
			}
			next.ServeHTTP(w, r)
		})
	}
	host := registrytest.NewDistribution(t, registrytest.WithRequestLog(counter.record), registrytest.WithMiddleware(declineMounts))
	c, _ := newTestClient(t)
	ctx := context.Background()
	b := newTestBlob([]byte("declined mount"))
	src, dst := mustRepo(t, host+"/src/a"), mustRepo(t, host+"/dst/b")
	if err := c.PushBlob(ctx, src, b.desc, b.open); err != nil {
		t.Fatal(err)
	}
	if err := c.PushBlob(ctx, dst, b.desc, b.open, src); err != nil {
		t.Fatalf("push with declined mount: %v", err)
	}
	if b.opens != 2 {
		t.Fatalf("content opened %d times, want 2 (declined mount uploads)", b.opens)
	}
	if posts := counter.matching("POST /v2/dst/b/blobs/uploads/"); len(posts) != 1 {
		t.Fatalf("upload sessions opened in dst: %v, want exactly the mount attempt", posts)
	}
	b.check(ctx, t, c, dst, "blob in dst")
}
