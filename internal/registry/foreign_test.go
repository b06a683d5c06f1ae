package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestForeignLayer(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		host := r.start(t)
		foreign := registrytest.Gzip(t, registrytest.Tar(t, "Files/windows.txt", "base os layer"))
		blobURL := registrytest.ServeBlob(t, "foreign/layer.tar.gz", foreign)
		ref := host + "/win/foreign:ltsc2022"
		registrytest.PushForeignLayerImage(t, ref, foreign, []string{blobURL}, windowsLayers(t, "f")[:1], v1.Platform{OSVersion: "10.0.20348.2031"})
		ctx := context.Background()

		c, _ := newTestClient(t) // default allowlist: Microsoft hosts only
		targets, err := c.Resolve(ctx, ref, v1.Platform{}, OSVersionPolicy{})
		if err != nil {
			t.Fatal(err)
		}
		l := targets[0].Layers[0]
		if !l.Foreign || l.MediaType != types.DockerForeignLayer || len(l.URLs) != 1 || l.URLs[0] != blobURL {
			t.Fatalf("foreign layer resolved as %+v", l)
		}
		if targets[0].Layers[1].Foreign {
			t.Fatalf("second layer marked foreign")
		}
		_, err = c.OpenLayer(ctx, targets[0], l)
		if !errors.Is(err, ErrForeignLayerRefused) || !strings.Contains(err.Error(), blobURL) {
			t.Fatalf("OpenLayer of a non-allowlisted foreign layer = %v, want ErrForeignLayerRefused naming %s", err, blobURL)
		}

		allowed, _ := newTestClient(t, WithForeignLayerHosts("127.0.0.1"))
		rc, err := allowed.OpenLayer(ctx, targets[0], l)
		if err != nil {
			t.Fatalf("OpenLayer with 127.0.0.1 allowlisted: %v", err)
		}
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, foreign) {
			t.Fatalf("foreign layer bytes: %d bytes, %v", len(got), err)
		}
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}

		// A URL serving other bytes is caught by the digest check.
		l2 := l
		l2.URLs = []string{registrytest.ServeBlob(t, "other", []byte("not the layer"))}
		rc, err = allowed.OpenLayer(ctx, targets[0], l2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(rc); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("wrong foreign bytes: %v, want ErrDigestMismatch", err)
		}
	})
}

func TestForeignURLAllowed(t *testing.T) {
	c, err := New(WithInsecure("plain.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url  string
		want bool
	}{
		{"https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:abc", true},
		{"https://MCR.microsoft.com/x", true},
		{"https://westus.data.mcr.microsoft.com/x", true},
		{"https://data.mcr.microsoft.com/x", false}, // "*.x" is subdomains only
		{"https://evil.mcr.microsoft.com.attacker.net/x", false},
		{"https://go.microsoft.com/fwlink/?linkid=1", true},
		{"http://mcr.microsoft.com/x", false}, // plain HTTP not allowed for this host
		{"ftp://mcr.microsoft.com/x", false},
		{"https://example.com/x", false},
		{"not a url", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := c.foreignURLAllowed(tt.url); got != tt.want {
			t.Errorf("foreignURLAllowed(%q) = %v, want %v", tt.url, got, tt.want)
		}
	}
}

func TestPlainHTTPGuard(t *testing.T) {
	var reached []string
	inner := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		reached = append(reached, r.URL.Host)
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	c, err := New(WithInsecure("registry.lan:5000"))
	if err != nil {
		t.Fatal(err)
	}
	g := &schemeGuard{inner: inner, allowed: c.plainHTTPAllowed}
	tests := []struct {
		url  string
		want bool
	}{
		{"http://127.0.0.1:5000/v2/", true},
		{"http://localhost:5000/v2/", true},
		{"http://[::1]:5000/v2/", true},
		{"http://registry.lan:5000/v2/", true},
		{"http://registry.lan:6000/v2/", false},
		{"http://10.1.2.3:5000/v2/", false}, // RFC 1918 is not loopback
		{"https://10.1.2.3:5000/v2/", true},
	}
	for _, tt := range tests {
		reached = nil
		req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
		_, err := g.RoundTrip(req)
		if tt.want != (err == nil) || tt.want != (len(reached) == 1) {
			t.Errorf("%s: err %v, reached %v; want allowed=%v", tt.url, err, reached, tt.want)
		}
		if !tt.want && !errors.Is(err, ErrInsecureRefused) {
			t.Errorf("%s: err %v, want ErrInsecureRefused", tt.url, err)
		}
	}
}

func TestDockerConfig(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		var armed atomic.Bool
		host := r.start(t, registrytest.WithBasicAuth("puller", "s3cret", armed.Load))
		registrytest.PushImage(t, host+"/private/app:1", windowsLayers(t, "p"), v1.Platform{OSVersion: "10.0.20348.1"})
		armed.Store(true)
		dir := t.TempDir()
		good := filepath.Join(dir, "good.json")
		auth := base64.StdEncoding.EncodeToString([]byte("puller:s3cret"))
		if err := os.WriteFile(good, []byte(`{"auths":{"http://`+host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		repo := mustRepo(t, host+"/private/app")

		c, _ := newTestClient(t, WithDockerConfig(good))
		if tags, err := c.ListTags(ctx, repo); err != nil || len(tags) != 1 {
			t.Fatalf("with credentials: %v, %v", tags, err)
		}
		if _, err := c.Resolve(ctx, host+"/private/app:1", v1.Platform{}, OSVersionPolicy{}); err != nil {
			t.Fatalf("Resolve with credentials: %v", err)
		}
		anon, _ := newTestClient(t)
		_, err := anon.ListTags(ctx, repo)
		if err == nil || errdefs.IsUnavailable(err) || errors.Is(err, ErrNotFound) {
			t.Fatalf("without credentials: %v, want a permanent auth error", err)
		}
	})
}
