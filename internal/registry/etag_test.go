package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fallbackOnlyRegistry is a minimal registry without the referrers API
// whose manifest PUTs honour If-Match (ETag = digest), and which lets the
// test slip a foreign write in between a client's read and write of the
// fallback tag (what another process would do).
type fallbackOnlyRegistry struct {
	mu          sync.Mutex
	manifests   map[string][]byte // tag or digest -> bytes
	intrude     func()            // called before the first conditional PUT
	conflicts   int
	ifMatch     []string
	ifNoneMatch []string
}

func (f *fallbackOnlyRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/v2/repo/")
	switch {
	case r.URL.Path == "/v2/":
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(p, "referrers/"):
		w.WriteHeader(http.StatusNotFound)
	case strings.HasPrefix(p, "manifests/"):
		ref := strings.TrimPrefix(p, "manifests/")
		f.mu.Lock()
		defer f.mu.Unlock()
		cur, ok := f.manifests[ref]
		etag := ""
		if ok {
			d, _, _ := v1.SHA256(bytes.NewReader(cur))
			etag = `"` + d.String() + `"`
		}
		switch r.Method {
		case http.MethodGet:
			if !ok {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Type", string(types.OCIImageIndex))
			_, _ = w.Write(cur)
		case http.MethodPut:
			if inm := r.Header.Get("If-None-Match"); inm != "" {
				f.ifNoneMatch = append(f.ifNoneMatch, inm)
				if inm == "*" && ok {
					f.conflicts++
					w.WriteHeader(http.StatusPreconditionFailed)
					return
				}
			}
			if im := r.Header.Get("If-Match"); im != "" {
				f.ifMatch = append(f.ifMatch, im)
				if f.intrude != nil {
					intrude := f.intrude
					f.intrude = nil
					f.mu.Unlock()
					intrude()
					f.mu.Lock()
					cur = f.manifests[ref]
					d, _, _ := v1.SHA256(bytes.NewReader(cur))
					etag = `"` + d.String() + `"`
				}
				if im != etag {
					f.conflicts++
					w.WriteHeader(http.StatusPreconditionFailed)
					return
				}
			}
			b, _ := io.ReadAll(r.Body)
			f.manifests[ref] = b
			w.WriteHeader(http.StatusCreated)
		}
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestFallbackIfMatchConflict(t *testing.T) {
	reg := &fallbackOnlyRegistry{manifests: map[string][]byte{}}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	subject := v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: 100, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("d", 64)}}
	subjectRef := mustDigestRef(t, host+"/repo@"+subject.Digest.String())
	tag := fallbackTag(subjectRef)
	c, _ := newTestClient(t)
	ctx := context.Background()
	repo := mustRepo(t, host+"/repo")

	// First artifact creates the tag (no ETag yet: unconditional PUT).
	first := newArtifact(t, testArtifactType, subject, "first")
	if _, err := c.PushArtifact(ctx, repo, first.manifest, types.OCIManifestSchema1, subject); err != nil {
		t.Fatal(err)
	}
	if len(reg.ifNoneMatch) != 1 || reg.ifNoneMatch[0] != "*" {
		t.Fatalf("creating the fallback tag sent If-None-Match %v, want [*]", reg.ifNoneMatch)
	}
	// Second: another writer adds an entry between our read and our write.
	intruder := v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: 1, ArtifactType: testArtifactType,
		Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("e", 64)}}
	reg.intrude = func() {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		var idx v1.IndexManifest
		_ = json.Unmarshal(reg.manifests[tag], &idx)
		idx.Manifests = append(idx.Manifests, intruder)
		reg.manifests[tag], _ = json.Marshal(idx)
	}
	second := newArtifact(t, testArtifactType, subject, "second")
	if _, err := c.PushArtifact(ctx, repo, second.manifest, types.OCIManifestSchema1, subject); err != nil {
		t.Fatal(err)
	}
	if reg.conflicts != 1 || len(reg.ifMatch) != 2 {
		t.Fatalf("conflicts %d, conditional PUTs %v; want one 412 then a successful retry", reg.conflicts, reg.ifMatch)
	}
	got, err := c.Referrers(ctx, subjectRef, testArtifactType)
	if err != nil {
		t.Fatal(err)
	}
	want := map[v1.Hash]bool{first.digest: true, second.digest: true, intruder.Digest: true}
	if len(got) != 3 {
		t.Fatalf("fallback index has %d entries, want 3 (ours and the intruder's)", len(got))
	}
	for _, d := range got {
		if !want[d.Digest] {
			t.Fatalf("unexpected entry %s", d.Digest)
		}
	}
}
