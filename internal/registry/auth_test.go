package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cimconv/cimconv/internal/registry/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// bearerAuth is a token-auth front for a test registry (the Docker token
// protocol): /token hands out a token naming the requested scopes, and
// every /v2/ request needs a token granting pull (GET/HEAD) or push on its
// repository, and pull on a mount's source. Enforced once armed.
func bearerAuth(armed *atomic.Bool, denied, insufficient *atomic.Int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				scopes := r.URL.Query()["scope"]
				tok := base64.RawURLEncoding.EncodeToString([]byte(strings.Join(scopes, " ")))
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
				return
			}
			if !armed.Load() {
				next.ServeHTTP(w, r)
				return
			}
			repo, need := requiredScope(r)
			granted := map[string]bool{}
			if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
				b, _ := base64.RawURLEncoding.DecodeString(tok)
				for _, s := range strings.Fields(string(b)) {
					parts := strings.Split(s, ":") // repository:NAME:actions
					if len(parts) == 3 {
						for _, a := range strings.Split(parts[2], ",") {
							granted[parts[1]+":"+a] = true
						}
					}
				}
			}
			ok := r.Header.Get("Authorization") != ""
			for _, n := range need {
				ok = ok && granted[n]
			}
			if !ok {
				denied.Add(1)
				if r.Header.Get("Authorization") != "" {
					insufficient.Add(1) // a token was sent but lacked a scope
				}
				scope := ""
				if repo != "" {
					scope = fmt.Sprintf(`,scope="repository:%s:%s"`, repo, strings.TrimPrefix(need[0], repo+":"))
				}
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="registrytest"%s`, r.Host, scope))
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// requiredScope: the repository of a /v2/ request and the "repo:action"
// grants it needs.
func requiredScope(r *http.Request) (string, []string) {
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.Index(p, kind); i > 0 {
			repo := p[:i]
			action := "pull"
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				action = "push"
			}
			need := []string{repo + ":" + action}
			if from := r.URL.Query().Get("from"); from != "" {
				need = append(need, from+":pull")
			}
			return repo, need
		}
	}
	return "", nil
}

// The whole round (resolve, stream, mount, push, fallback tag, referrers)
// works against a registry that issues scoped bearer tokens: push
// operations ask for push,pull and mounts for pull on the source.
func TestBearerTokenScopes(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		var armed atomic.Bool
		var denied, insufficient atomic.Int64
		f := newFixture(t, r, registrytest.WithMiddleware(bearerAuth(&armed, &denied, &insufficient)))
		registrytest.PushImage(t, f.host+"/other/base:1", windowsLayers(t, "other"), v1.Platform{OSVersion: "10.0.20348.1"})
		armed.Store(true)
		c, _ := newTestClient(t)
		ctx := context.Background()
		targets, err := c.Resolve(ctx, f.repo+":multi", v1.Platform{}, OSVersionPolicy{Mode: OSVersionExact, Version: "20348"})
		if err != nil {
			t.Fatalf("Resolve with bearer auth: %v", err)
		}
		tg := targets[0]
		rc, err := c.OpenLayer(ctx, tg, tg.Layers[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		// Mount a layer of other/base into win/app's sibling repo.
		src := mustRepo(t, f.host+"/other/base")
		dst := mustRepo(t, f.host+"/win/copy")
		otherTargets, err := c.Resolve(ctx, f.host+"/other/base:1", v1.Platform{}, OSVersionPolicy{})
		if err != nil {
			t.Fatal(err)
		}
		l := otherTargets[0].Layers[1]
		if err := c.PushBlob(ctx, dst, v1.Descriptor{Digest: l.Digest, Size: l.Size}, func() (io.ReadCloser, error) {
			return c.OpenLayer(ctx, otherTargets[0], l)
		}, src); err != nil {
			t.Fatalf("PushBlob with mount under bearer auth: %v", err)
		}
		repo := mustRepo(t, f.repo)
		a := newArtifact(t, testArtifactType, tg.Descriptor, "auth")
		if _, err := a.push(ctx, c, repo, tg.Descriptor); err != nil {
			t.Fatalf("push artifact with bearer auth: %v", err)
		}
		got, err := c.Referrers(ctx, tg.Ref, testArtifactType)
		if err != nil || len(got) != 1 || got[0].Digest != a.digest {
			t.Fatalf("Referrers = %+v, %v", got, err)
		}
		tags, err := c.ListTags(ctx, repo)
		if err != nil || !slices.Contains(tags, "multi") {
			t.Fatalf("ListTags = %v, %v", tags, err)
		}
		if denied.Load() == 0 {
			t.Fatal("the auth front never challenged: the test did not exercise token auth")
		}
		// ggcr re-requests a token when a challenge names a new scope, so
		// too-narrow scopes still work, one extra round trip per request;
		// the client must ask for the right ones up front.
		if n := insufficient.Load(); n != 0 {
			t.Fatalf("%d requests carried a token without the scope they needed", n)
		}
	})
}

func TestNewRefusesBadDockerConfig(t *testing.T) {
	dir := t.TempDir()
	malformed := filepath.Join(dir, "config.json")
	if err := os.WriteFile(malformed, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(dir, "absent.json"), "absent.json"},
		{"malformed file", malformed, "not a dockerconfigjson file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(WithDockerConfig(tt.path))
			if err == nil || c != nil {
				t.Fatalf("New = %v, %v; want an error", c, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %q", err, tt.want)
			}
		})
	}
}
