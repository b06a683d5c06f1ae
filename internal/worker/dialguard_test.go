package worker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// refusedTarget stands for a host the policy refuses (another loopback port
// here; the metadata endpoint or a pod-local admin port in production). It
// counts the requests it receives and answers like a token server.
func refusedTarget(t *testing.T) (hostport string, hits *atomic.Int64) {
	hits = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"token":"t","access_token":"t"}`))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), hits
}

// guardedAdapter is the serve wiring: the policy checks the request, and
// guards every connection of the registry client.
func guardedAdapter(t *testing.T, p *RegistryPolicy) *ConvertAdapter {
	t.Helper()
	reg, err := registry.New(registry.WithDialGuard(p.DialGuard()))
	if err != nil {
		t.Fatal(err)
	}
	cache, err := convert.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return NewConvertAdapter(reg, portable.New(), cache, WithWorkDir(t.TempDir()), WithRegistryPolicy(p))
}

// A registry the policy allows (listed, or named though loopback) sends the
// worker to a host the policy refuses: by redirecting a blob GET (as
// registries do to their CDN), or with a token realm there. The worker must
// not connect to it, and the conversion fails permanently naming the
// address. Found in review: the policy checked the request's registry name
// only, and the client followed.
func TestPolicyGuardsEveryConnection(t *testing.T) {
	target, hits := refusedTarget(t)
	_, targetPort, _ := net.SplitHostPort(target)
	var armed atomic.Bool
	for _, tc := range []struct {
		name string
		mw   func(http.Handler) http.Handler
	}{
		{"redirect", func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if armed.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
					http.Redirect(w, r, "http://"+target+"/latest/meta-data/iam/security-credentials/", http.StatusTemporaryRedirect)
					return
				}
				next.ServeHTTP(w, r)
			})
		}},
		// ggcr refuses a realm that is a private IP literal, not a name
		// resolving to one: localhost stands for any such name.
		{"token realm", func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if armed.Load() && r.Header.Get("Authorization") == "" {
					w.Header().Set("WWW-Authenticate", `Bearer realm="http://localhost:`+targetPort+`/admin/token",service="reg"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				next.ServeHTTP(w, r)
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			armed.Store(false)
			host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(tc.mw))
			registrytest.PushImage(t, host+"/win/app:1", [][]byte{fixture.BaseLayer().Bytes(fixture.Gzip)},
				v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"})
			armed.Store(true)
			listed, err := NewRegistryPolicy([]string{host})
			if err != nil {
				t.Fatal(err)
			}
			named, err := NewRegistryPolicy(nil, AllowHosts(host))
			if err != nil {
				t.Fatal(err)
			}
			for pname, p := range map[string]*RegistryPolicy{"allowed-registries": listed, "no list, host named": named} {
				t.Run(pname, func(t *testing.T) {
					if err := p.Check(context.Background(), target+"/x:1"); !errors.Is(err, ErrRegistryNotAllowed) {
						t.Fatalf("precondition: the policy allows %s: %v", target, err)
					}
					before := hits.Load()
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					_, err := guardedAdapter(t, p).Convert(ctx, queueRequest(host+"/win/app:1"), func(string) {})
					if n := hits.Load() - before; n > 0 {
						t.Fatalf("worker sent %d request(s) to refused host %s; conversion err = %v", n, target, err)
					}
					if !errors.Is(err, ErrRegistryNotAllowed) || errdefs.Classify(Classify(err)) != errdefs.RetryCannotHelp {
						t.Fatalf("conversion err = %v; want a permanent refusal by the registry policy", err)
					}
				})
			}
		})
	}
}

// DNS rebinding: the request's check resolves the registry's name to a
// public address (the injected resolver, standing for an attacker's DNS with
// a TTL of 0); the connection resolves it again and gets loopback. The
// guard checks the address dialled. "vm" resolves to 127.0.0.1 on these CI
// machines (/etc/hosts); elsewhere the test is skipped.
func TestPolicyGuardsTheAddressDialled(t *testing.T) {
	sys, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", "vm")
	if err != nil || len(sys) == 0 || !sys[0].Unmap().IsLoopback() {
		t.Skipf("vm does not resolve to loopback here (%v, %v): no stand-in for a rebinding name", sys, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	p, err := NewRegistryPolicy(nil, WithResolver(func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = guardedAdapter(t, p).Convert(ctx, queueRequest("vm:"+port+"/win/app:1"), func(string) {})
	if n := conns.Load(); n > 0 {
		t.Fatalf("worker opened %d connection(s) to %v (loopback) after the policy saw 203.0.113.7; conversion err = %v", n, sys, err)
	}
	if !errors.Is(err, ErrRegistryNotAllowed) {
		t.Fatalf("conversion err = %v; want the registry policy's refusal", err)
	}
}
