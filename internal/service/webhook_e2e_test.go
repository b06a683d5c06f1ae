package service

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/testport"
	"github.com/cimconv/cimconv/internal/worker"
)

// A real distribution registry notifies the service's webhook endpoint
// (configured through the webhook-* keys); the request goes through NATS to
// the worker, and pushing the same image again converts it once. Requests
// without the token get 401 and queue nothing.
func TestDistributionWebhookToWorker(t *testing.T) {
	const token = "notify-token"
	var (
		mu   sync.Mutex
		seen []string
	)
	conv := worker.ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		mu.Lock()
		seen = append(seen, req.Image)
		mu.Unlock()
		return &queue.Result{SubjectDigests: []string{req.Image[strings.LastIndex(req.Image, "@")+1:]}}, nil
	})
	cfg := testConfig(t)
	cfg.Listen = testport.Addr(t)
	cfg.WebhookTokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(cfg.WebhookTokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := registrytest.NewDistribution(t, registrytest.WithNotifications(
		"http://"+cfg.Listen+"/webhooks/distribution", http.Header{"Authorization": {"Bearer " + token}}))
	cfg.WebhookAllowedRegistries = []string{reg}
	hooks, err := ConfigWebhooks(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := start(t, Options{Config: cfg, Converter: conv, Webhooks: hooks})
	base := "http://" + s.Addr()

	layer := registrytest.Gzip(t, registrytest.Tar(t, "Files/hello.txt", "hello"))
	windows := v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}
	desc := registrytest.PushImage(t, reg+"/win/app:v1", [][]byte{layer}, windows)
	want := reg + "/win/app@" + desc.Digest.String()
	waitFor(t, func() bool {
		st, err := s.Queue().Status(context.Background(), want)
		return err == nil && st.State == queue.StateSucceeded
	})
	// The webhook request is keyed by digest; `status repo:tag` finds it too
	// (issue 9 #10).
	waitFor(t, func() bool {
		st, err := s.Queue().Status(context.Background(), reg+"/win/app:v1")
		return err == nil && st.State == queue.StateSucceeded && st.Image == want
	})
	// The same image pushed again under another tag: one more notification,
	// the same idempotency key, no second conversion.
	registrytest.PushImage(t, reg+"/win/app:v1-again", [][]byte{layer}, windows)
	waitFor(t, func() bool {
		_, body := get(t, base+"/metrics")
		return strings.Contains(body, `cimconv_events_total{outcome="duplicate",source="distribution"} 1`)
	})
	// No token: refused and counted, nothing queued.
	resp, err := http.Post(base+"/webhooks/distribution", "application/vnd.docker.distribution.events.v1+json", strings.NewReader(`{"events":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unauthenticated webhook: %d, want 401", resp.StatusCode)
	}
	_, body := get(t, base+"/metrics")
	if !strings.Contains(body, `cimconv_events_total{outcome="unauthorized",source="distribution"} 1`) {
		t.Errorf("401 not counted:\n%s", grep(body, "events_total"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != want {
		t.Errorf("converter saw %v, want exactly [%s]", seen, want)
	}
}

func TestConfigWebhooksErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.WebhookTokenFile = filepath.Join(t.TempDir(), "missing")
	if _, err := ConfigWebhooks(cfg, nil); err == nil || !strings.Contains(err.Error(), "webhook-token-file") {
		t.Errorf("missing token file: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, []byte(" \n"), 0o600)
	cfg.WebhookTokenFile = ""
	cfg.WebhookHMACSecretFile = empty
	if _, err := ConfigWebhooks(cfg, nil); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty secret file: %v", err)
	}
	cfg.WebhookHMACSecretFile = ""
	cfg.WebhookAllowedRegistries = []string{"http://bad entry"}
	hooks, err := ConfigWebhooks(cfg, nil)
	if err == nil {
		_, err = hooks(nil, nil)
	}
	if err == nil {
		t.Error("a malformed allowlist entry was accepted")
	}
}
