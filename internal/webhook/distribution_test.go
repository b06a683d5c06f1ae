package webhook

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory" // "inmemory" storage driver
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var quietLogrus sync.Once

// startDistribution runs CNCF distribution v3 in-process on 127.0.0.1 with
// in-memory storage, sending its notifications (with references, so the
// config media type of a pushed manifest is visible) to notifyURL with the
// given headers. It returns "127.0.0.1:port".
//
// internal/registry/registrytest.NewDistribution does the same but does not
// expose notifications.events.includereferences, which loop prevention needs.
func startDistribution(t *testing.T, notifyURL string, headers http.Header) string {
	t.Helper()
	quietLogrus.Do(func() {
		// distribution logs through the logrus standard logger, including
		// the endpoint headers (our bearer token) at info level.
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.PanicLevel)
	})
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"inmemory":    configuration.Parameters{},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	cfg.Log.Level = "panic"
	cfg.Log.AccessLog.Disabled = true
	cfg.HTTP.Secret = "webhook-test"
	cfg.Notifications.EventConfig.IncludeReferences = true
	cfg.Notifications.Endpoints = []configuration.Endpoint{{
		Name:      "cimconv",
		URL:       notifyURL,
		Headers:   headers,
		Timeout:   5 * time.Second,
		Threshold: 3,
		Backoff:   100 * time.Millisecond,
	}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := httptest.NewServer(handlers.NewApp(ctx, cfg))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestRealDistributionNotifications pushes to a real distribution registry
// and checks what its notifications turn into: the image push becomes one
// event with the right repository and digest; blob pushes, our own artifact
// (pushed with a subject, through the referrers tag fallback) and the
// fallback index are not submitted.
func TestRealDistributionNotifications(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	events := make(chan Event, 16)
	sink := SinkFunc(func(_ context.Context, e Event) error {
		events <- e
		return nil
	})
	core, logs := observer.New(zap.DebugLevel)
	c := &counter{}

	// The registry needs the webhook URL and the handler needs the
	// registry's address (allowlist): start the webhook server first.
	var (
		mu sync.Mutex
		h  http.Handler
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hh := h
		mu.Unlock()
		if hh == nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		hh.ServeHTTP(w, r)
	}))
	defer hook.Close()

	const token = "distribution-notify-token"
	reg := startDistribution(t, hook.URL+"/webhooks/distribution", http.Header{"Authorization": {"Bearer " + token}})
	handler, err := New(sink,
		WithAuth(SourceDistribution, Auth{BearerToken: token}),
		WithAllowedRegistries(reg),
		WithLogger(zap.New(core)),
		WithEventCounter(c.inc),
	)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	h = handler
	mu.Unlock()

	// 1. An image.
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(reg + "/windows/app:ltsc2022")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	imgDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	got := waitEvent(ctx, t, events)
	want := Event{
		Source: SourceDistribution, Registry: reg, Repository: "windows/app", Digest: imgDigest.String(),
		Tag: "ltsc2022", MediaType: string(types.DockerManifestSchema2),
	}
	if got.ID == "" {
		t.Error("event has no id")
	}
	got.ID = ""
	if got != want {
		t.Fatalf("event:\n got %+v\nwant %+v", got, want)
	}

	// 2. Our own artifact referring to it, the way cimconv publishes on a
	// registry without the referrers API.
	imgSize, _ := img.Size()
	art := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), DefaultOwnArtifactType)
	art = mutate.Subject(art, v1.Descriptor{MediaType: types.DockerManifestSchema2, Digest: imgDigest, Size: imgSize}).(v1.Image)
	artDigest, err := art.Digest()
	if err != nil {
		t.Fatal(err)
	}
	artRef, err := name.NewDigest(reg + "/windows/app@" + artDigest.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(artRef, art, remote.WithContext(ctx), remote.WithReferrersTagFallback(true)); err != nil {
		t.Fatal(err)
	}

	// 3. A second image: distribution delivers an endpoint's events in
	// order, so once its event is here the artifact's were handled.
	img2, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag.Context().Tag("ltsc2025"), img2, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	img2Digest, _ := img2.Digest()
	if got := waitEvent(ctx, t, events); got.Digest != img2Digest.String() || got.Tag != "ltsc2025" {
		t.Fatalf("second event = %+v, want digest %s (the artifact or the fallback index leaked through?)", got, img2Digest)
	}
	select {
	case e := <-events:
		t.Fatalf("unexpected extra event %+v", e)
	default:
	}

	// The artifact and the referrers fallback index were seen and dropped
	// as our own, not by their tag.
	dropped := map[string]string{}
	for _, e := range logs.FilterMessage("webhook event ignored").All() {
		fields := e.ContextMap()
		if r, _ := fields["reason"].(string); strings.Contains(r, "own artifact") {
			dropped[fields["digest"].(string)] = r
		}
	}
	if _, ok := dropped[artDigest.String()]; !ok {
		t.Errorf("artifact %s not dropped as own artifact; dropped: %v", artDigest, dropped)
	}
	if len(dropped) != 2 {
		t.Errorf("dropped %d own-artifact events, want 2 (artifact and fallback index): %v", len(dropped), dropped)
	}
	// The sink has the event before the handler counts it: wait for the
	// count (a read right after the event flaked CI once: accepted 1).
	for c.snapshot()["distribution/accepted"] < 2 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	counts := c.snapshot()
	if counts["distribution/accepted"] != 2 || counts["distribution/unauthorized"] != 0 || counts["distribution/invalid"] != 0 {
		t.Errorf("counter = %v", counts)
	}
	for _, e := range logs.All() {
		for _, v := range e.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, token) {
				t.Errorf("token logged in %q", e.Message)
			}
		}
	}
}

func waitEvent(ctx context.Context, t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-ctx.Done():
		t.Fatal("no event from the registry before the test deadline")
		return Event{}
	}
}

// A registry configured with the wrong token is refused with 401, counted,
// and nothing it announces is submitted.
func TestRealDistributionWrongToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sink := SinkFunc(func(_ context.Context, e Event) error {
		t.Errorf("submitted %+v from an unauthenticated registry", e)
		return nil
	})
	c := &counter{}
	var (
		mu sync.Mutex
		h  http.Handler
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hh := h
		mu.Unlock()
		if hh == nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		hh.ServeHTTP(w, r)
	}))
	defer hook.Close()
	reg := startDistribution(t, hook.URL+"/webhooks/distribution", http.Header{"Authorization": {"Bearer not-the-token"}})
	handler, err := New(sink, WithAuth(SourceDistribution, Auth{BearerToken: "the-token"}), WithAllowedRegistries(reg), WithEventCounter(c.inc))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	h = handler
	mu.Unlock()

	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(reg + "/windows/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	// Distribution keeps retrying refused deliveries; wait for the first
	// 401 to be counted.
	for c.snapshot()["distribution/unauthorized"] == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("no delivery reached the handler before the test deadline")
		case <-time.After(10 * time.Millisecond):
		}
	}
	counts := c.snapshot()
	for k := range counts {
		if k != "distribution/unauthorized" {
			t.Errorf("unexpected outcome %s in %v", k, counts)
		}
	}
}
