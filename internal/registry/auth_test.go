package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/errdefs"
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

// heldPings holds the registry's answer to the ping (GET /v2/) that sets up
// a transport while armed, until release is closed or the client gives up.
type heldPings struct {
	armed   atomic.Bool
	count   atomic.Int32
	pinged  chan struct{} // one send per held ping
	release chan struct{}
}

func newHeldPings() *heldPings {
	return &heldPings{pinged: make(chan struct{}, 16), release: make(chan struct{})}
}

func (h *heldPings) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			h.count.Add(1)
			if h.armed.Load() {
				h.pinged <- struct{}{}
				select {
				case <-h.release:
				case <-r.Context().Done():
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// The transport setup (credentials, ping, first token) that concurrent
// operations on a repository share runs detached from all of them: the one
// that started it giving up fails only itself, at once, and never the others
// (a delivery wasted, eventually a dead letter); a setup that timed out is
// not kept, so the next operation sets up again.
func TestTransportSetupIsNotTiedToACaller(t *testing.T) {
	start := func(t *testing.T, opts ...Option) (*heldPings, *Client, func(context.Context) error) {
		t.Helper()
		pings := newHeldPings()
		host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(pings.middleware))
		registrytest.PushImage(t, host+"/win/app:1", [][]byte{registrytest.Tar(t, "Files/a.txt", "a")}, v1.Platform{OS: "windows", Architecture: "amd64"})
		pings.armed.Store(true)
		pings.count.Store(0)
		c, _ := newTestClient(t, opts...)
		repo := mustRepo(t, host+"/win/app")
		return pings, c, func(ctx context.Context) error { _, err := c.ListTags(ctx, repo); return err }
	}
	// waitErr waits for an operation's result, failing the test if it takes
	// longer than any held ping could explain.
	waitErr := func(t *testing.T, what string, errc <-chan error) error {
		t.Helper()
		select {
		case err := <-errc:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not return", what)
			return nil
		}
	}

	t.Run("the first caller cancelled, another waiting", func(t *testing.T) {
		pings, _, listTags := start(t)
		ctx1, cancel1 := context.WithCancel(context.Background())
		err1, err2 := make(chan error, 1), make(chan error, 1)
		go func() { err1 <- listTags(ctx1) }()
		<-pings.pinged // the first caller is setting up the transport
		go func() { err2 <- listTags(context.Background()) }()
		time.Sleep(200 * time.Millisecond) // the second one waits on that setup
		cancel1()
		if err := waitErr(t, "the cancelled caller", err1); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled caller: %v, want context.Canceled", err)
		}
		close(pings.release) // only now does the ping answer
		if err := waitErr(t, "the waiting caller", err2); err != nil {
			t.Fatalf("a caller whose context is live failed with the setup it waited on: %v", err)
		}
	})

	t.Run("the only caller cancelled", func(t *testing.T) {
		pings, c, listTags := start(t)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- listTags(ctx) }()
		<-pings.pinged
		cancel()
		if err := waitErr(t, "the cancelled caller", errc); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled caller: %v, want context.Canceled", err)
		}
		close(pings.release)
		// The setup goes on without its caller and is kept.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			c.transportsMu.Lock()
			kept := len(c.transports)
			c.transportsMu.Unlock()
			if kept == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the setup its cancelled caller started was not kept")
			}
		}
		if err := listTags(context.Background()); err != nil {
			t.Fatalf("next operation: %v", err)
		}
		if n := pings.count.Load(); n != 1 {
			t.Errorf("%d pings, want 1: the kept setup serves the next operation", n)
		}
	})

	t.Run("the setup timed out", func(t *testing.T) {
		pings, c, listTags := start(t)
		c.setupTimeout = 300 * time.Millisecond
		// The caller's own deadline only bounds the test.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := listTags(ctx)
		if err == nil {
			t.Fatal("operation succeeded although its transport setup timed out")
		}
		if got := errdefs.Classify(err); got != errdefs.RetryMayHelp {
			t.Errorf("setup timeout: %v classified %v, want RetryMayHelp (the caller was not cancelled)", err, got)
		}
		pings.armed.Store(false)
		if err := listTags(context.Background()); err != nil {
			t.Fatalf("operation after the timed-out setup: %v (a failed setup was kept)", err)
		}
	})
}
