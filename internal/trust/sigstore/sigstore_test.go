package sigstore_test

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
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/trust/keys"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
	"github.com/cimconv/cimconv/internal/trust/trusttest"
)

// env is a registry on 127.0.0.1 with two images in one repository.
type env struct {
	host     string
	reg      *registry.Client
	requests atomic.Int64
	a, b     name.Digest // two different images of win/app
}

func newEnv(t *testing.T, opts ...registrytest.Opt) *env {
	t.Helper()
	e := &env{}
	opts = append(opts, registrytest.WithRequestLog(func(*http.Request) { e.requests.Add(1) }))
	e.host = registrytest.NewReferrersRegistry(t, opts...)
	reg, err := registry.New(registry.WithInsecure(e.host))
	if err != nil {
		t.Fatal(err)
	}
	e.reg = reg
	p := v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"}
	for i, d := range []*name.Digest{&e.a, &e.b} {
		ref := fmt.Sprintf("%s/win/app:%d", e.host, i)
		desc := registrytest.PushImage(t, ref, [][]byte{
			registrytest.Gzip(t, registrytest.Tar(t, "Files/base.txt", "base")),
			registrytest.Gzip(t, registrytest.Tar(t, "Files/top.txt", fmt.Sprintf("image %d", i))),
		}, p)
		dd, err := name.NewDigest(e.host+"/win/app@"+desc.Digest.String(), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		*d = dd
	}
	return e
}

func (e *env) signer(t *testing.T, k *trusttest.Key) *sigstore.Signer {
	t.Helper()
	s, err := sigstore.NewSigner(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signed pushes a correctly bound artifact for subject and signs it with k.
func (e *env) signed(t *testing.T, subject name.Digest, k *trusttest.Key) (*trusttest.Artifact, v1.Hash) {
	t.Helper()
	a := trusttest.PushArtifact(t, e.reg, subject, nil, nil)
	h, err := e.signer(t, k).Push(context.Background(), e.reg, subject.Context(), a.Desc, sigstore.PredicateFor(&a.Config))
	if err != nil {
		t.Fatal(err)
	}
	return a, h
}

func (e *env) verifier(t *testing.T, trusted ...*trusttest.Key) *sigstore.Verifier {
	t.Helper()
	var pubs []*keys.PublicKey
	for _, k := range trusted {
		pubs = append(pubs, k.Public())
	}
	v, err := sigstore.NewVerifier(e.reg, pubs)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func verify(v trust.Verifier, subject name.Digest, a *trusttest.Artifact) (*trust.Result, error) {
	return v.Verify(context.Background(), trust.Request{Subject: subject, Artifact: a.Desc, Manifest: a.Manifest})
}

// copySignature pushes the bundle of signature sig again, as a referrer of
// to: what an attacker with push rights (and no key) can do.
func (e *env) copySignature(t *testing.T, repo name.Repository, sig v1.Hash, to v1.Descriptor) {
	t.Helper()
	ctx := context.Background()
	raw, _, err := e.reg.FetchManifest(ctx, repo.Digest(sig.String()))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["subject"] = v1.Descriptor{MediaType: to.MediaType, Digest: to.Digest, Size: to.Size}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.PushArtifact(ctx, repo, b, types.OCIManifestSchema1, to); err != nil {
		t.Fatal(err)
	}
}

func TestSignVerify(t *testing.T) {
	e := newEnv(t)
	k := trusttest.NewKey(t, t.TempDir(), "worker")
	a, sig := e.signed(t, e.a, k)
	res, err := verify(e.verifier(t, k), e.a, a)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !res.Signed || res.KeyID != k.Public().ID || res.Signature != sig.String() {
		t.Fatalf("result %+v; want signed by %s with signature %s", res, k.Public().ID, sig)
	}
	all := strings.Join(res.Checks, "\n")
	for _, want := range []string{"hashes to " + a.Desc.Digest.String(), "subject is " + e.a.DigestStr(), "trusted key " + k.Public().ID, "layer 0:", "layer 1:", `builder "portable"`} {
		if !strings.Contains(all, want) {
			t.Errorf("checks do not mention %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "FAIL") {
		t.Errorf("a passing verification lists a failure:\n%s", all)
	}
}

// TestAttacks: an attacker with push rights to the repository, without the
// signing key. None of these may be accepted.
func TestAttacks(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	worker := trusttest.NewKey(t, dir, "worker")
	attacker := trusttest.NewKey(t, dir, "attacker")
	retired := trusttest.NewKey(t, dir, "retired")
	v := e.verifier(t, worker)
	repo := e.a.Context()

	cases := []struct {
		name  string
		setup func(t *testing.T) (name.Digest, *trusttest.Artifact)
		want  error
	}{{
		name: "a unsigned artifact",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			return e.a, trusttest.PushArtifact(t, e.reg, e.a, nil, nil)
		},
		want: trust.ErrUnsigned,
	}, {
		name: "b signed by an untrusted key",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			a, _ := e.signed(t, e.a, attacker)
			return e.a, a
		},
		want: trust.ErrUnknownKey,
	}, {
		name: "c1 signed artifact of another image listed for this one",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			a, _ := e.signed(t, e.b, worker)
			return e.a, a
		},
		want: trust.ErrUnbound,
	}, {
		name: "c2 signed artifact of another image, subject rewritten, signature copied",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			b, sig := e.signed(t, e.b, worker)
			forged := trusttest.PushManifest(t, e.reg, e.a, mustJSON(t, b.Config), placeholderBlobs(b), time.Now())
			e.copySignature(t, repo, sig, forged.Desc)
			return e.a, forged
		},
		want: trust.ErrBadSignature,
	}, {
		name: "c3 config copied from another image's signed artifact",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			// Same layers as image b in a config naming b: the signature is
			// genuine, but its predicate and config name b.
			a, _ := e.signed(t, e.b, worker)
			return e.a, a
		},
		want: trust.ErrUnbound,
	}, {
		name: "d blob swapped after signing, signature copied",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			a, sig := e.signed(t, e.a, worker)
			blobs := placeholderBlobs(a)
			blobs[1] = []byte("attacker's CIM")
			forged := trusttest.PushManifest(t, e.reg, e.a, mustJSON(t, a.Config), blobs, time.Now())
			e.copySignature(t, repo, sig, forged.Desc)
			return e.a, forged
		},
		want: trust.ErrBadSignature,
	}, {
		name: "d config swapped after signing (another diffID), signature copied",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			a, sig := e.signed(t, e.a, worker)
			cfg := a.Config
			cfg.Layers = append([]artifact.LayerConfig(nil), cfg.Layers...)
			cfg.Layers[1].Integrity = "tampered"
			forged := trusttest.PushManifest(t, e.reg, e.a, mustJSON(t, cfg), placeholderBlobs(a), time.Now())
			e.copySignature(t, repo, sig, forged.Desc)
			return e.a, forged
		},
		want: trust.ErrBadSignature,
	}, {
		name: "f genuine artifact signed by a key removed from the trusted set",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			a, _ := e.signed(t, e.a, retired)
			return e.a, a
		},
		want: trust.ErrUnknownKey,
	}, {
		name: "signed by the worker, but for a config with a wrong diffID",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			a := trusttest.PushArtifact(t, e.reg, e.a, func(c *artifact.Config) { c.Layers[0].DiffID = c.Layers[1].DiffID }, nil)
			if _, err := e.signer(t, worker).Push(context.Background(), e.reg, repo, a.Desc, sigstore.PredicateFor(&a.Config)); err != nil {
				t.Fatal(err)
			}
			return e.a, a
		},
		want: trust.ErrUnbound,
	}, {
		name: "signed by the worker, config without a subject (pre-signing artifact)",
		setup: func(t *testing.T) (name.Digest, *trusttest.Artifact) {
			a := trusttest.PushArtifact(t, e.reg, e.a, func(c *artifact.Config) { c.Subject = "" }, nil)
			p := sigstore.PredicateFor(&a.Config)
			p.Subject = e.a.DigestStr()
			if _, err := e.signer(t, worker).Push(context.Background(), e.reg, repo, a.Desc, p); err != nil {
				t.Fatal(err)
			}
			return e.a, a
		},
		want: trust.ErrUnbound,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			subject, a := tc.setup(t)
			res, err := verify(v, subject, a)
			if err == nil {
				t.Fatalf("accepted: %+v", res)
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, trust.ErrUntrusted) {
				t.Fatalf("error %v; want %v", err, tc.want)
			}
			if res == nil || len(res.Checks) == 0 || !strings.HasPrefix(res.Checks[len(res.Checks)-1], "FAIL") {
				t.Fatalf("result %+v does not end with the failed check", res)
			}
		})
	}
}

// TestTamperedRegistryBlob: the registry (or a proxy) serves other bytes for
// the artifact config's digest after signing. The digest check refuses them.
func TestTamperedRegistryBlob(t *testing.T) {
	var swap atomic.Value // digest string to tamper with
	swap.Store("")
	e := newEnv(t, registrytest.WithMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if d := swap.Load().(string); d != "" && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+d) {
				w.Header().Set("Content-Type", "application/octet-stream")
				fmt.Fprint(w, `{"formatVersion":"1","layers":[]}`)
				return
			}
			next.ServeHTTP(w, r)
		})
	}))
	k := trusttest.NewKey(t, t.TempDir(), "worker")
	a, _ := e.signed(t, e.a, k)
	var m v1.Manifest
	if err := json.Unmarshal(a.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	swap.Store(m.Config.Digest.String())
	res, err := verify(e.verifier(t, k), e.a, a)
	if err == nil {
		t.Fatalf("accepted a config served with other bytes: %+v", res)
	}
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "artifact config") {
		t.Fatalf("error %v; want an untrusted artifact config", err)
	}
}

// TestRotation: while old and new keys are both trusted, artifacts signed
// with either verify and name their key; once the old key is removed its
// artifacts are refused.
func TestRotation(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	old, cur := trusttest.NewKey(t, dir, "old"), trusttest.NewKey(t, dir, "new")
	aOld, _ := e.signed(t, e.a, old)
	aNew, _ := e.signed(t, e.b, cur)
	both := e.verifier(t, old, cur)
	for _, c := range []struct {
		subject name.Digest
		a       *trusttest.Artifact
		key     *trusttest.Key
	}{{e.a, aOld, old}, {e.b, aNew, cur}} {
		res, err := verify(both, c.subject, c.a)
		if err != nil {
			t.Fatalf("during rotation: %v", err)
		}
		if res.KeyID != c.key.Public().ID {
			t.Fatalf("key %s; want %s", res.KeyID, c.key.Public().ID)
		}
	}
	// The same artifact carrying signatures by both keys verifies under
	// either trusted set.
	if _, err := e.signer(t, cur).Push(context.Background(), e.reg, e.a.Context(), aOld.Desc, sigstore.PredicateFor(&aOld.Config)); err != nil {
		t.Fatal(err)
	}
	newOnly := e.verifier(t, cur)
	if res, err := verify(newOnly, e.a, aOld); err != nil || res.KeyID != cur.Public().ID {
		t.Fatalf("re-signed artifact under the new key only: %+v, %v", res, err)
	}
	aOnlyOld, _ := e.signed(t, e.a, old)
	if _, err := verify(newOnly, e.a, aOnlyOld); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("old-key artifact after the old key was removed: %v; want ErrUnknownKey", err)
	}
}

// TestJunkSignatures: 1,000 junk referrers on the genuine artifact (bundles
// signed by an attacker's key, some claiming the trusted key's id, and
// non-bundle artifacts) plus the genuine signature. The genuine one is found,
// and the number of registry requests is bounded by the junk that claims the
// trusted key id (2 requests each) plus a constant.
func TestJunkSignatures(t *testing.T) {
	e := newEnv(t)
	worker, a, raw := attackerSignature(t, e)
	ctx := context.Background()
	repo := e.a.Context()
	const junk, claiming = 1000, 20
	for i := 1; i < junk; i++ {
		trusttest.PutCopy(t, e.host, "win/app", raw, func(m map[string]any) {
			trusttest.Annotate(m, "junk", fmt.Sprint(i))
			switch {
			case i < claiming:
				trusttest.Annotate(m, sigstore.AnnotationKeyID, worker.Public().ID) // a lie
			case i%2 == 0:
				m["artifactType"] = "application/vnd.example.junk"
				m["config"].(map[string]any)["mediaType"] = "application/vnd.example.junk"
			}
		})
	}
	if _, err := e.signer(t, worker).Push(ctx, e.reg, repo, a.Desc, sigstore.PredicateFor(&a.Config)); err != nil {
		t.Fatal(err)
	}
	all, err := e.reg.Referrers(ctx, repo.Digest(a.Desc.Digest.String()), "")
	if err != nil || len(all) != junk+1 {
		t.Fatalf("%d referrers, %v; want %d", len(all), err, junk+1)
	}
	before := e.requests.Load()
	res, err := verify(e.verifier(t, worker), e.a, a)
	if err != nil {
		t.Fatalf("genuine signature among %d junk referrers: %v", junk, err)
	}
	n := e.requests.Load() - before
	t.Logf("verified among %d junk signature referrers with %d registry requests (key %s)", junk, n, res.KeyID)
	// referrers list + (claiming junk + genuine) x (manifest + blob) + the
	// artifact config, image manifest and image config, with slack for
	// token/ping requests.
	if bound := int64(1 + 2*(claiming+1) + 3 + 5); n > bound {
		t.Fatalf("%d requests; want at most %d", n, bound)
	}
}

// TestBadSignatureContentIsARefusal: a planted artifact whose only
// signature referrer is junk (a bundle descriptor with a wrong size, digest
// algorithm or no blob behind it, a signature manifest the registry does not
// have or serves with other bytes) is refused (trust.ErrUntrusted), so a
// node's search goes on to the next candidate; before, the registry error
// ended the search and the genuine artifact behind it was never examined.
// A registry that cannot answer (503) is not a verdict.
func TestBadSignatureContentIsARefusal(t *testing.T) {
	var faults registrytest.Faults
	e := newEnv(t, registrytest.WithMiddleware(faults.Middleware))
	k := trusttest.NewKey(t, t.TempDir(), "worker")
	// One attempt per request: the 503 case would otherwise wait for retries.
	reg, err := registry.New(registry.WithInsecure(e.host), registry.WithRetry(registry.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	v, err := sigstore.NewVerifier(reg, []*keys.PublicKey{k.Public()})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		blob  bool                                  // push the bundle blob
		edit  func(*v1.Descriptor)                  // the manifest's bundle layer descriptor
		fault func(sig, blob v1.Hash) (string, int) // a registry fault to inject (path suffix, status)
		want  error                                 // nil: an error that is not trust.ErrUntrusted
	}{
		{name: "bundle descriptor larger than the blob", blob: true, edit: func(d *v1.Descriptor) { d.Size++ }, want: trust.ErrUnsigned},
		{name: "bundle descriptor smaller than the blob", blob: true, edit: func(d *v1.Descriptor) { d.Size-- }, want: trust.ErrUnsigned},
		{name: "bundle blob missing", want: trust.ErrUnsigned},
		{name: "bundle digest not sha256", blob: true, edit: func(d *v1.Descriptor) {
			d.Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("ab", 64)}
		}, want: trust.ErrUnsigned},
		{name: "signature manifest missing", blob: true, fault: func(sig, _ v1.Hash) (string, int) {
			return "/manifests/" + sig.String(), http.StatusNotFound
		}, want: trust.ErrUnsigned},
		{name: "signature manifest served with other bytes", blob: true, fault: func(sig, _ v1.Hash) (string, int) {
			return "/manifests/" + sig.String(), registrytest.Garble
		}, want: trust.ErrUnsigned},
		{name: "registry unavailable for the bundle", blob: true, fault: func(_, b v1.Hash) (string, int) {
			return "/blobs/" + b.String(), http.StatusServiceUnavailable
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := trusttest.PushArtifact(t, e.reg, e.a, nil, nil)
			// Distinct bytes per case: a blob pushed by another case would
			// be found by digest.
			bundle := fmt.Appendf(nil, `{"not":"a bundle","case":%q}`, tc.name)
			sig, real := trusttest.PushJunkSignature(t, e.reg, e.a.Context(), a.Desc, bundle, tc.blob, tc.edit)
			if tc.fault != nil {
				path, status := tc.fault(sig, real.Digest)
				faults.Set(path, status)
				defer faults.Clear(path)
			}
			res, err := verify(v, e.a, a)
			switch {
			case err == nil:
				t.Fatalf("accepted an artifact signed only by junk: %+v", res)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Verify = %v; want a refusal (%v)", err, tc.want)
			case tc.want == nil && (errors.Is(err, trust.ErrUntrusted) || !errdefs.IsUnavailable(err)):
				t.Fatalf("Verify = %v; want an unavailable registry, not a verdict", err)
			}
			if tc.want != nil && !strings.Contains(err.Error(), sig.String()) {
				t.Errorf("Verify = %v; want the junk signature %s named", err, sig)
			}
		})
	}
}

// TestCheckRecorded: a verdict recorded earlier (a layer cached by
// `converter fetch --root`) satisfies the verifier only when it says the
// artifact was signed by a key trusted now.
func TestCheckRecorded(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	worker, retired := trusttest.NewKey(t, dir, "worker"), trusttest.NewKey(t, dir, "retired")
	v := e.verifier(t, worker)
	cases := []struct {
		name string
		res  *trust.Result
		want error // nil: accepted
	}{
		{"signed by a trusted key", &trust.Result{Signed: true, KeyID: worker.Public().ID}, nil},
		{"recorded under --trust-unsigned", &trust.Result{Signed: false}, trust.ErrUnsigned},
		{"signed by a key no longer trusted", &trust.Result{Signed: true, KeyID: retired.Public().ID}, trust.ErrUnknownKey},
		{"no verdict", nil, trust.ErrUntrusted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := v.CheckRecorded(tc.res)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckRecorded(%+v) = %v; want %v", tc.res, err, tc.want)
			}
		})
	}
}

func TestNoKeys(t *testing.T) {
	if _, err := sigstore.NewVerifier(nil, nil); err == nil || !strings.Contains(err.Error(), "--trusted-key") {
		t.Fatalf("NewVerifier without keys: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func placeholderBlobs(a *trusttest.Artifact) [][]byte {
	var out [][]byte
	for i := range a.Config.Layers {
		out = append(out, []byte(fmt.Sprintf("placeholder CIM blob %d of %s", i, a.Config.Subject)))
	}
	return out
}

// Key ids are public, so junk can claim a trusted one: the bundles that do
// are examined only up to a bound, so their cost has a limit too (before,
// every claiming bundle was examined, two requests each, without limit).
func TestClaimedSignaturesAreBounded(t *testing.T) {
	e := newEnv(t)
	worker, a, raw := attackerSignature(t, e)
	const claiming, bound = 40, 5
	for i := range claiming {
		trusttest.PutCopy(t, e.host, "win/app", raw, func(m map[string]any) {
			trusttest.Annotate(m, "junk", fmt.Sprint(i))
			trusttest.Annotate(m, sigstore.AnnotationKeyID, worker.Public().ID) // a lie
		})
	}
	v, err := sigstore.NewVerifier(e.reg, []*keys.PublicKey{worker.Public()},
		sigstore.WithMaxClaimedSignatures(bound), sigstore.WithMaxSignatures(0))
	if err != nil {
		t.Fatal(err)
	}
	before := e.requests.Load()
	_, err = verify(v, e.a, a)
	n := e.requests.Load() - before
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), fmt.Sprintf("examined %d of %d", bound, claiming+1)) {
		t.Fatalf("err = %v; want untrusted, saying %d of %d signature referrers were examined", err, bound, claiming+1)
	}
	// The referrers list, then manifest and bundle of each examined one;
	// slack for token/ping requests.
	if max := int64(1 + 2*bound + 5); n > max {
		t.Fatalf("%d requests for %d junk signatures claiming a trusted key; want at most %d", n, claiming, max)
	}
}

// attackerSignature pushes an artifact and an attacker's signature of it
// and returns the key the verifier will trust, the artifact and the
// signature's referrer manifest, for junk copies.
func attackerSignature(t *testing.T, e *env) (worker *trusttest.Key, a *trusttest.Artifact, sigManifest []byte) {
	t.Helper()
	dir := t.TempDir()
	worker, attacker := trusttest.NewKey(t, dir, "worker"), trusttest.NewKey(t, dir, "attacker")
	a = trusttest.PushArtifact(t, e.reg, e.a, nil, nil)
	ctx := context.Background()
	repo := e.a.Context()
	sig, err := e.signer(t, attacker).Push(ctx, e.reg, repo, a.Desc, sigstore.PredicateFor(&a.Config))
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := e.reg.FetchManifest(ctx, repo.Digest(sig.String()))
	if err != nil {
		t.Fatal(err)
	}
	return worker, a, raw
}
