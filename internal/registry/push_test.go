package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
)

const testArtifactType = "application/vnd.cimconv.cim.v1+json"

func TestPushArtifactAndReferrers(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		f, c, repo, subject := newPushFixture(t, r, "10.0.20348.2031")
		ctx := context.Background()
		subjectRef := repo.Digest(subject.Digest.String())

		a := newArtifact(t, testArtifactType, subject, "one")
		got, err := a.push(ctx, c, repo, subject)
		if err != nil {
			t.Fatalf("push artifact: %v", err)
		}
		if got != a.digest {
			t.Fatalf("PushArtifact returned %s, manifest hashes to %s", got, a.digest)
		}
		// The manifest is there by digest, verified.
		raw, desc, err := c.FetchManifest(ctx, repo.Digest(got.String()))
		if err != nil || !bytes.Equal(raw, a.manifest) || desc.Digest != got {
			t.Fatalf("FetchManifest = %d bytes, %+v, %v", len(raw), desc, err)
		}
		// Another artifact type on the same subject, for filtering.
		other := newArtifact(t, "application/vnd.example.sbom", subject, "sbom")
		if _, err := other.push(ctx, c, repo, subject); err != nil {
			t.Fatal(err)
		}

		all, err := c.Referrers(ctx, subjectRef, "")
		if err != nil {
			t.Fatalf("Referrers: %v", err)
		}
		if len(all) != 2 {
			t.Fatalf("Referrers listed %d, want 2: %+v", len(all), all)
		}
		cims, err := c.Referrers(ctx, subjectRef, testArtifactType)
		if err != nil {
			t.Fatalf("Referrers filtered: %v", err)
		}
		if len(cims) != 1 || cims[0].Digest != a.digest || cims[0].ArtifactType != testArtifactType ||
			cims[0].Annotations["io.cimconv.test.payload"] != "one" || cims[0].Size != int64(len(a.manifest)) {
			t.Fatalf("filtered referrers = %+v, want only %s with its annotations", cims, a.digest)
		}
		// Another subject has none.
		none, err := c.Referrers(ctx, repo.Digest(f.images["10.0.17763.5000"].Digest.String()), testArtifactType)
		if err != nil || len(none) != 0 {
			t.Fatalf("Referrers of an untouched subject = %+v, %v", none, err)
		}

		// Which path was used: the referrers API, or the fallback tag.
		tags, err := c.ListTags(ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		fb := fallbackTag(subjectRef)
		if has := slices.Contains(tags, fb); has == r.referrers {
			t.Fatalf("fallback tag %s present = %v on %s (referrers API %v)", fb, has, r.name, r.referrers)
		}
		if puts := f.counter.count(http.MethodPut, "/v2/win/app/manifests/"+fb); r.referrers && puts != 0 {
			t.Fatalf("%d PUTs of the fallback tag on a registry with the referrers API", puts)
		}
		// Pushing the same artifact again does not duplicate it.
		if _, err := a.push(ctx, c, repo, subject); err != nil {
			t.Fatal(err)
		}
		again, err := c.Referrers(ctx, subjectRef, testArtifactType)
		if err != nil || len(again) != 1 {
			t.Fatalf("after re-push: %+v, %v", again, err)
		}
	})
}

// Five artifacts pushed concurrently for one subject must all land in the
// fallback index: the read-modify-write is serialized per subject.
func TestPushArtifactConcurrentFallback(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		_, c, repo, subject := newPushFixture(t, r, "10.0.26100.100")
		ctx := context.Background()
		var wg sync.WaitGroup
		want := map[v1.Hash]bool{}
		errs := make(chan error, 5)
		for i := range 5 {
			a := newArtifact(t, testArtifactType, subject, fmt.Sprintf("artifact-%d", i))
			want[a.digest] = true
			wg.Go(func() {
				if _, err := a.push(ctx, c, repo, subject); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent push: %v", err)
		}
		got, err := c.Referrers(ctx, repo.Digest(subject.Digest.String()), testArtifactType)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 5 {
			t.Fatalf("Referrers listed %d artifacts, want 5", len(got))
		}
		if n := c.subjectLocks.Len(); n != 0 {
			t.Fatalf("%d subject locks left after all pushes finished", n)
		}
		for _, d := range got {
			if !want[d.Digest] {
				t.Fatalf("unexpected referrer %s", d.Digest)
			}
		}
	})
}

func TestPushArtifactFallbackDisabled(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		f, c, repo, subject := newPushFixture(t, r, "10.0.20348.2031", WithReferrersFallback(false))
		ctx := context.Background()
		a := newArtifact(t, testArtifactType, subject, "x")
		_, err := a.push(ctx, c, repo, subject)
		_, _, ferr := c.FetchManifest(ctx, repo.Digest(a.digest.String()))
		_, rerr := c.Referrers(ctx, repo.Digest(subject.Digest.String()), "")
		if r.referrers {
			if err != nil || ferr != nil || rerr != nil {
				t.Fatalf("with the referrers API: push %v, fetch %v, referrers %v", err, ferr, rerr)
			}
			return
		}
		if !errors.Is(err, ErrReferrersUnsupported) || !strings.Contains(err.Error(), f.host) {
			t.Fatalf("push without referrers API and fallback disabled: %v, want ErrReferrersUnsupported naming %s", err, f.host)
		}
		if !errors.Is(ferr, ErrNotFound) {
			t.Fatalf("artifact manifest was pushed anyway (fetch: %v)", ferr)
		}
		if !errors.Is(rerr, ErrReferrersUnsupported) {
			t.Fatalf("Referrers with fallback disabled: %v", rerr)
		}
	})
}

func TestPushArtifactRejectsWrongSubject(t *testing.T) {
	c, _ := newTestClient(t)
	subject := v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}, Size: 10}
	a := newArtifact(t, testArtifactType, subject, "x")
	other := subject
	other.Digest.Hex = strings.Repeat("b", 64)
	_, err := c.PushArtifact(context.Background(), mustRepo(t, "127.0.0.1:1/x"), a.manifest, "application/vnd.oci.image.manifest.v1+json", other)
	if err == nil || !strings.Contains(err.Error(), other.Digest.String()) {
		t.Fatalf("PushArtifact with mismatched subject = %v", err)
	}
}

func TestPushBlobExistsAndMount(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		counter := newRequestCounter()
		host := r.start(t, registrytestRequestLog(counter))
		c, _ := newTestClient(t)
		ctx := context.Background()
		b := newTestBlob([]byte("blob content for mount"))
		src, dst := mustRepo(t, host+"/src/a"), mustRepo(t, host+"/dst/b")
		if err := c.PushBlob(ctx, src, b.desc, b.open); err != nil {
			t.Fatal(err)
		}
		if b.opens != 1 {
			t.Fatalf("first push opened content %d times", b.opens)
		}
		// Present already: HEAD only, content never opened.
		if err := c.PushBlob(ctx, src, b.desc, b.open); err != nil || b.opens != 1 {
			t.Fatalf("re-push: %v, opens %d", err, b.opens)
		}
		if err := c.PushBlob(ctx, dst, b.desc, b.open, src); err != nil {
			t.Fatal(err)
		}
		// distribution mounts (201). ggcr's test registry keeps one blob
		// store for all repositories, so its HEAD already finds the blob.
		mounts := counter.matching("/v2/dst/b/blobs/uploads/?from=src%2Fa&mount=" + url.QueryEscape(b.desc.Digest.String()))
		if wantMounts := map[string]int{"distribution": 1, "ggcr": 0}[r.name]; len(mounts) != wantMounts {
			t.Fatalf("mount requests %v, want %d", mounts, wantMounts)
		}
		if b.opens != 1 {
			t.Fatalf("blob present in the source repo was uploaded again (%d opens)", b.opens)
		}
		b.check(ctx, t, c, dst, "mounted blob")
	})
}

func TestListTags(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		f := newFixture(t, r)
		c, _ := newTestClient(t)
		got, err := c.ListTags(context.Background(), mustRepo(t, f.repo))
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		want := append([]string{"multi"}, fixtureVersions...)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("ListTags = %v, want %v", got, want)
		}
		_, err = c.ListTags(context.Background(), mustRepo(t, f.host+"/does/not-exist"))
		if r.name == "distribution" && !errors.Is(err, ErrNotFound) {
			t.Fatalf("ListTags of a missing repo = %v, want ErrNotFound", err)
		}
	})
}

func TestNextLink(t *testing.T) {
	base := mustURL(t, "http://127.0.0.1:5000/v2/a/tags/list?n=2")
	tests := []struct {
		link, want string
		wantErr    bool
	}{
		{"", "", false},
		{`</v2/a/tags/list?last=b&n=2>; rel="next"`, "http://127.0.0.1:5000/v2/a/tags/list?last=b&n=2", false},
		{`<https://other/v2/a/tags/list?last=c>; rel="next"`, "https://other/v2/a/tags/list?last=c", false},
		{`rel="next"`, "", true},
		{`</v2/a/tags/list`, "", true},
	}
	for _, tt := range tests {
		got, err := nextLink(base, tt.link)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("nextLink(%q) = %q, %v; want %q, err %v", tt.link, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzNextLink(f *testing.F) {
	for _, s := range []string{"", `</v2/a/tags/list?last=b&n=2>; rel="next"`, "<>", "<%zz>", "<<>>"} {
		f.Add(s)
	}
	base := mustURL(f, "http://127.0.0.1:5000/v2/a/tags/list")
	f.Fuzz(func(t *testing.T, link string) {
		_, _ = nextLink(base, link)
	})
}

// uploadFault stands between the client and the registry for the PUT that
// completes a blob upload.
type uploadFault int

const (
	// sessionUnknown answers 404 BLOB_UPLOAD_UNKNOWN without passing the
	// PUT on, as a replica that does not share upload state would.
	sessionUnknown uploadFault = iota
	// bare404 answers 404 with no registry error body (a proxy's page).
	bare404
	// committedThen504 lets the registry commit the upload and answers
	// 504, as a load balancer that gave up waiting would; the client's
	// retry then finds the session closed.
	committedThen504
)

// failUploads applies fault to the first n upload PUTs (all when n < 0).
func failUploads(fault uploadFault, n int) func(http.Handler) http.Handler {
	var left atomic.Int64
	left.Store(int64(n))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/blobs/uploads/") || (n >= 0 && left.Add(-1) < 0) {
				next.ServeHTTP(w, r)
				return
			}
			switch fault {
			case sessionUnknown:
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}`)
			case bare404:
				http.Error(w, "404 page not found", http.StatusNotFound)
			case committedThen504:
				next.ServeHTTP(httptest.NewRecorder(), r)
				http.Error(w, "upstream timed out", http.StatusGatewayTimeout)
			}
		})
	}
}

// An upload session the registry lost or closed is not a missing blob: the
// push looks for the blob and opens a new session, and when sessions keep
// being lost the error is transient (the worker retries), never ErrNotFound
// (it would dead-letter a request that a later delivery completes).
func TestPushBlobUploadSessionLost(t *testing.T) {
	tests := []struct {
		name  string
		fault uploadFault
		times int // PUTs failed; -1: all
		// sessions is how many upload sessions the push opens (POSTs).
		sessions int
		wantErr  bool
	}{
		{"registry committed, proxy answered 504", committedThen504, 1, 1, false},
		{"session unknown to the replica once", sessionUnknown, 1, 2, false},
		{"bare 404 from a proxy once", bare404, 1, 2, false},
		{"session unknown twice", sessionUnknown, 2, 3, false},
		{"session lost every time", sessionUnknown, -1, 1 + maxUploadRestarts, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachRegistry(t, func(t *testing.T, r testRegistry) {
				counter := newRequestCounter()
				host := r.start(t, registrytestRequestLog(counter), registrytest.WithMiddleware(failUploads(tt.fault, tt.times)))
				c, _ := newTestClient(t)
				repo := mustRepo(t, host+"/win/lost")
				b := newTestBlob([]byte(strings.Repeat("cim layer blob ", 1000)))
				ctx := context.Background()
				err := c.PushBlob(ctx, repo, b.desc, b.open)
				if posts := counter.matching("POST /v2/win/lost/blobs/uploads/"); len(posts) != tt.sessions {
					t.Errorf("upload sessions opened: %d, want %d", len(posts), tt.sessions)
				}
				if !tt.wantErr {
					if err != nil {
						t.Fatalf("PushBlob = %v, want the blob pushed", err)
					}
					b.check(ctx, t, c, repo, "pushed blob")
					return
				}
				if err == nil {
					t.Fatal("PushBlob succeeded although every upload session was lost")
				}
				if errors.Is(err, ErrNotFound) || errdefs.Classify(err) != errdefs.RetryMayHelp {
					t.Fatalf("PushBlob = %v: ErrNotFound %v, Classify %v; want transient (retry may help), not ErrNotFound",
						err, errors.Is(err, ErrNotFound), errdefs.Classify(err))
				}
			})
		})
	}
}

// A mount whose source the registry does not know (404 instead of a new
// upload session) falls back to a normal upload.
func TestPushBlobMountSourceNotFound(t *testing.T) {
	counter := newRequestCounter()
	unknownSource := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Query().Has("mount") {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	host := registrytest.NewDistribution(t, registrytest.WithRequestLog(counter.record), registrytest.WithMiddleware(unknownSource))
	c, _ := newTestClient(t)
	ctx := context.Background()
	b := newTestBlob([]byte("mount source gone"))
	gone, other, dst := mustRepo(t, host+"/src/gone"), mustRepo(t, host+"/src/other"), mustRepo(t, host+"/dst/b")
	if err := c.PushBlob(ctx, dst, b.desc, b.open, gone, other); err != nil {
		t.Fatalf("push with a mount source the registry does not know: %v", err)
	}
	posts := counter.matching("POST /v2/dst/b/blobs/uploads/")
	if len(posts) != 3 {
		t.Fatalf("upload sessions asked for in dst: %v, want a mount from each source and a plain upload", posts)
	}
	b.check(ctx, t, c, dst, "blob in dst")
}
