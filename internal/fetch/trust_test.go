package fetch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/fetch"
	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/trust/keys"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
	"github.com/cimconv/cimconv/internal/trust/trusttest"
)

// signConverted signs the (only) artifact of image with k and returns its
// descriptor.
func signConverted(t *testing.T, reg *registry.Client, image string, k *trusttest.Key) v1.Descriptor {
	t.Helper()
	ctx := context.Background()
	subject := resolveDigest(t, reg, image)
	descs, err := reg.Referrers(ctx, subject, artifact.ArtifactType)
	if err != nil || len(descs) != 1 {
		t.Fatalf("referrers of %s: %v, %v", subject, descs, err)
	}
	raw, _, err := reg.FetchManifest(ctx, subject.Context().Digest(descs[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	rc, err := reg.FetchBlob(ctx, subject.Context(), m.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var cfg artifact.Config
	if err := json.NewDecoder(rc).Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	s, err := sigstore.NewSigner(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Push(ctx, reg, subject.Context(), descs[0], sigstore.PredicateFor(&cfg)); err != nil {
		t.Fatal(err)
	}
	return descs[0]
}

func resolveDigest(t *testing.T, reg *registry.Client, image string) name.Digest {
	t.Helper()
	ts, err := reg.Resolve(context.Background(), image, v1.Platform{OS: "windows", Architecture: "amd64"}, registry.OSVersionPolicy{Mode: "all"})
	if err != nil {
		t.Fatal(err)
	}
	return ts[0].Ref
}

func verifierFor(t *testing.T, reg *registry.Client, ks ...*trusttest.Key) trust.Verifier {
	t.Helper()
	var pubs []*keys.PublicKey
	for _, k := range ks {
		pubs = append(pubs, k.Public())
	}
	v, err := sigstore.NewVerifier(reg, pubs)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFetchTrust(t *testing.T) {
	dir := t.TempDir()
	worker, other := trusttest.NewKey(t, dir, "worker"), trusttest.NewKey(t, dir, "other")
	_, image := converted(t, nil)
	reg := fetchtest.NewRegistry(t)

	// Unsigned: refused with a clear reason, nothing placed.
	dest := t.TempDir()
	_, err := fetch.New(reg, nil).Fetch(context.Background(), image, fetch.Options{Dest: dest, Verifier: verifierFor(t, reg, worker)})
	if !errors.Is(err, trust.ErrUnsigned) {
		t.Fatalf("unsigned artifact: %v; want ErrUnsigned", err)
	}
	if left := entries(t, dest); len(left) != 0 {
		t.Fatalf("a refused fetch placed %v", left)
	}
	// No trust policy at all: refused before any request.
	if _, err := fetch.New(reg, nil).Fetch(context.Background(), image, fetch.Options{Dest: dest}); err == nil {
		t.Fatal("fetch without a verifier succeeded")
	}

	signConverted(t, reg, image, worker)
	// Signed by a key the node does not trust.
	if _, err := fetch.New(reg, nil).Fetch(context.Background(), image, fetch.Options{Dest: dest, Verifier: verifierFor(t, reg, other)}); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("signed by an untrusted key: %v; want ErrUnknownKey", err)
	}
	// Trusted (with the other key also trusted: rotation).
	res, err := fetch.New(reg, nil).Fetch(context.Background(), image, fetch.Options{Dest: dest, Verifier: verifierFor(t, reg, other, worker)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Trust == nil || !res.Trust.Signed || res.Trust.KeyID != worker.Public().ID || len(res.Layers) != 2 {
		t.Fatalf("result %+v, trust %+v", res, res.Trust)
	}
}

// TestFetchJunkReferrers: an attacker pushes 1,000 junk cimconv artifacts
// for the image, all newer than the genuine one (990 unsigned, 10 signed by
// the attacker's key). Fetch refuses each and takes the genuine one; the
// registry requests are counted and bounded.
func TestFetchJunkReferrers(t *testing.T) {
	var requests atomic.Int64
	counting := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			next.ServeHTTP(w, r)
		})
	}
	host, image := converted(t, counting)
	reg := fetchtest.NewRegistry(t)
	dir := t.TempDir()
	worker, attacker := trusttest.NewKey(t, dir, "worker"), trusttest.NewKey(t, dir, "attacker")
	genuine := signConverted(t, reg, image, worker)
	subject := resolveDigest(t, reg, image)
	raw, _, err := reg.FetchManifest(context.Background(), subject.Context().Digest(genuine.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	const junk, signedJunk = 1000, 10
	as, err := sigstore.NewSigner(attacker.Private)
	if err != nil {
		t.Fatal(err)
	}
	newer := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for i := range junk {
		d := trusttest.PutCopy(t, host, subject.RepositoryStr(), raw, func(m map[string]any) {
			trusttest.Annotate(m, artifact.AnnotationCreated, newer)
			trusttest.Annotate(m, "junk", fmt.Sprint(i))
		})
		if i < signedJunk {
			if _, err := as.Push(context.Background(), reg, subject.Context(), d, sigstore.Predicate{Subject: subject.DigestStr()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := requests.Load()
	found, err := fetch.New(reg, nil).Find(context.Background(), image, fetch.Options{Verifier: verifierFor(t, reg, worker)})
	if err != nil {
		t.Fatalf("genuine artifact among %d junk: %v", junk, err)
	}
	n := requests.Load() - before
	t.Logf("found the genuine artifact after refusing %d junk artifacts, %d registry requests", len(found.Refused), n)
	if found.Artifact.Digest != genuine.Digest || len(found.Refused) != junk || found.Trust.KeyID != worker.Public().ID {
		t.Fatalf("found %s (refused %d, key %s); want %s after %d", found.Artifact.Digest, len(found.Refused), found.Trust.KeyID, genuine.Digest, junk)
	}
	// resolve (tag + manifest + config) and the referrers list, then per
	// unsigned junk the manifest and its (empty) referrers, per signed junk
	// also the signature manifest and bundle, and the genuine one with its
	// artifact config, image manifest and config; slack for pings.
	bound := int64(4 + 2*junk + 2*signedJunk + 7 + 10)
	if n > bound {
		t.Fatalf("%d requests to find the genuine artifact; want at most %d", n, bound)
	}
}

// TestFindRefusesJunkCandidates: newer planted artifacts that are junk in
// the registry (one whose only signature referrer gives its bundle a wrong
// size, one whose manifest the registry does not have, one whose manifest
// comes with other bytes than its digest) each cost a refusal, and Find goes
// on to the genuine signed artifact; before, the first of them ended the
// search with its registry error. A registry that cannot answer for a
// candidate (503) still ends it, with that error and no verdict.
func TestFindRefusesJunkCandidates(t *testing.T) {
	var faults registrytest.Faults
	host, image := converted(t, faults.Middleware)
	ctx := context.Background()
	// One attempt per request: the 503 would otherwise wait for retries.
	reg := fetchtest.NewRegistry(t, registry.WithRetry(registry.RetryPolicy{MaxAttempts: 1}))
	worker := trusttest.NewKey(t, t.TempDir(), "worker")
	genuine := signConverted(t, reg, image, worker)
	subject := resolveDigest(t, reg, image)
	raw, _, err := reg.FetchManifest(ctx, subject.Context().Digest(genuine.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	newer := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	plant := func(label string) v1.Descriptor {
		return trusttest.PutCopy(t, host, subject.RepositoryStr(), raw, func(m map[string]any) {
			trusttest.Annotate(m, artifact.AnnotationCreated, newer)
			trusttest.Annotate(m, "junk", label)
		})
	}
	junkSigned := plant("junk signature")
	trusttest.PushJunkSignature(t, reg, subject.Context(), junkSigned, []byte(`{"not":"a bundle"}`), true, func(d *v1.Descriptor) { d.Size++ })
	faults.Set("/manifests/"+plant("missing").Digest.String(), http.StatusNotFound)
	faults.Set("/manifests/"+plant("garbled").Digest.String(), registrytest.Garble)

	found, err := fetch.New(reg, nil).Find(ctx, image, fetch.Options{Verifier: verifierFor(t, reg, worker)})
	if err != nil {
		t.Fatalf("Find behind 3 junk artifacts = %v; want the genuine artifact %s", err, genuine.Digest)
	}
	if found.Artifact.Digest != genuine.Digest || len(found.Refused) != 3 {
		t.Fatalf("found %s after refusing %+v; want %s after 3 refusals", found.Artifact.Digest, found.Refused, genuine.Digest)
	}
	for _, r := range found.Refused {
		if r.Artifact == junkSigned.Digest.String() && !strings.Contains(r.Reason, "digest mismatch") {
			t.Errorf("refusal of the junk-signed artifact says %q; want the bundle's digest mismatch", r.Reason)
		}
	}

	faults.Set("/manifests/"+plant("unavailable").Digest.String(), http.StatusServiceUnavailable)
	_, err = fetch.New(reg, nil).Find(ctx, image, fetch.Options{Verifier: verifierFor(t, reg, worker)})
	if err == nil || errors.Is(err, trust.ErrUntrusted) || !errdefs.IsUnavailable(err) {
		t.Fatalf("Find with a candidate the registry cannot serve = %v; want the registry's unavailable error, not a verdict", err)
	}
}
