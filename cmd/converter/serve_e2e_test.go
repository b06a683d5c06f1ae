package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/zap/zaptest"

	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/service"
	"github.com/cimconv/cimconv/internal/testport"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func serveConfig(t *testing.T) service.Config {
	cfg := service.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.EmbeddedNATSPort = 0
	cfg.Builder = "portable"
	// The test registries listen on 127.0.0.1: allowed explicitly.
	cfg.AllowLocalRegistries = true
	cfg.RetryBackoff = 20 * time.Millisecond
	cfg.ShutdownGrace = 2 * time.Second
	return cfg
}

// startServe runs the real `converter serve` wiring (real converter, real
// embedded NATS) until the test ends.
func startServe(t *testing.T, cfg service.Config, hooks service.WebhooksFunc) *service.Service {
	t.Helper()
	log := zaptest.NewLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	conv, err := newServeConverter(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s, err := service.Start(ctx, service.Options{Config: cfg, Converter: conv, Webhooks: hooks, Logger: log})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := s.Wait(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkArtifact asserts exactly one artifact refers to subject and that the
// fetched chain shows the layers' merged view.
func checkArtifact(t *testing.T, subject string, layers [][]byte) {
	t.Helper()
	reg := fetchtest.NewRegistry(t)
	if descs := fetchtest.Artifacts(t, reg, subject); len(descs) != 1 {
		t.Fatalf("%s has %d artifacts, want exactly 1", subject, len(descs))
	}
	fetchtest.CheckFetched(t, reg, subject, "", layers)
}

// A real distribution registry notifies the service; the webhook queues the
// pushed image; the worker converts it with the portable builder and pushes
// the artifact (fallback tag: distribution has no referrers API), whose own
// notification is dropped, not converted.
func TestServeDistributionWebhookEndToEnd(t *testing.T) {
	const token = "e2e-token"
	cfg := serveConfig(t)
	cfg.Listen = testport.Addr(t)
	cfg.WebhookTokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(cfg.WebhookTokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	host := registrytest.NewDistribution(t, registrytest.WithNotifications(
		"http://"+cfg.Listen+"/webhooks/distribution", http.Header{"Authorization": {"Bearer " + token}}))
	cfg.WebhookAllowedRegistries = []string{host}
	hooks, err := service.ConfigWebhooks(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := startServe(t, cfg, hooks)

	layers, desc := pushChain(t, host+"/win/hooked:v1", 2)
	subject := host + "/win/hooked@" + desc.Digest.String()
	waitUntil(t, "the webhook-triggered conversion", func() bool {
		st, err := s.Queue().Status(context.Background(), subject)
		return err == nil && st.State == queue.StateSucceeded
	})
	checkArtifact(t, subject, layers)
	// The artifact push and its fallback-tag index notified the service
	// too: both are ignored by the webhook, none runs as a conversion, and
	// the real converter's stages all reach the stage histogram (issue 9
	// #7, #10).
	metricsText := func() string {
		resp, err := http.Get("http://" + s.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitUntil(t, "the own-write events to be ignored", func() bool {
		return strings.Contains(metricsText(), `cimconv_events_total{outcome="ignored",source="distribution"}`)
	})
	text := metricsText()
	if !strings.Contains(text, `cimconv_conversions_total{reason="none",result="succeeded"} 1`+"\n") {
		t.Errorf("want exactly one counted conversion:\n%s", text)
	}
	for _, stage := range []string{"resolve", "plan", "build", "pack", "push", "total"} {
		if !strings.Contains(text, `cimconv_stage_duration_seconds_count{result="ok",stage="`+stage+`"}`) {
			t.Errorf("stage %s missing from cimconv_stage_duration_seconds", stage)
		}
	}
	dead, err := s.Queue().Dead(context.Background())
	if err != nil || len(dead) != 0 {
		t.Fatalf("dead letters %v, %v", dead, err)
	}
	checkArtifact(t, subject, layers)
}

// Two workers on one NATS convert two images sharing a base layer at the
// same time: the shared chain cache makes the base build exactly once.
func TestServeSharedChainCacheAcrossWorkers(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	first := startServe(t, serveConfig(t), nil)
	cfg2 := serveConfig(t)
	cfg2.NATSURL = first.NATSURL()
	cfg2.Role = service.RoleWorker
	startServe(t, cfg2, nil)

	base := fixture.BaseLayer().Bytes(fixture.Gzip)
	images := map[string][][]byte{}
	for i := 1; i <= 2; i++ {
		layers := [][]byte{base, fixture.AppLayer(i).Bytes(fixture.Zstd)}
		ref := host + "/win/shared" + string(rune('0'+i)) + ":v1"
		registrytest.PushImage(t, ref, layers, ltsc2022)
		images[ref] = layers
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type out struct {
		res *queue.Result
		err error
	}
	results := make(chan out, len(images))
	for ref := range images {
		go func() {
			res, _, err := first.Queue().SubmitAndWait(ctx, queue.Request{Image: ref, Requester: "test"})
			results <- out{res, err}
		}()
	}
	built, cached := 0, 0
	for range images {
		o := <-results
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.res.Error != "" {
			t.Fatalf("conversion failed: %s", o.res.Error)
		}
		built += o.res.LayersBuilt
		cached += o.res.LayersCached
	}
	if built != 3 || cached != 1 {
		t.Fatalf("layers built %d, reused %d; want 3 and 1 (the shared base built once)", built, cached)
	}
	for ref, layers := range images {
		r, _ := name.ParseReference(ref, name.Insecure)
		reg := fetchtest.NewRegistry(t)
		targets, err := reg.Resolve(context.Background(), ref, v1.Platform{OS: "windows", Architecture: "amd64"}, registry.OSVersionPolicy{})
		if err != nil {
			t.Fatal(err)
		}
		checkArtifact(t, r.Context().Digest(targets[0].Descriptor.Digest.String()).String(), layers)
	}
}
