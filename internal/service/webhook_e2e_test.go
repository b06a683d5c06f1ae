package service

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/webhook"
	"github.com/cimconv/cimconv/internal/worker"
)

// webhookSink is the adapter serve needs between the webhook package and the
// queue: an accepted push event becomes a request for the pushed manifest,
// and a collapsed duplicate is reported as such.
func webhookSink(submit SubmitFunc) webhook.Sink {
	return webhook.SinkFunc(func(ctx context.Context, e webhook.Event) error {
		dup, err := submit(ctx, queue.Request{Image: e.Ref(), Source: "webhook/" + e.Source, Requester: e.ID})
		if err != nil {
			return err
		}
		if dup {
			return webhook.ErrDuplicate
		}
		return nil
	})
}

// A real distribution registry notifies the service's webhook endpoint; the
// request goes through NATS to the worker, and pushing the same image twice
// converts it once.
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
	// The registry needs the webhook URL and the handler the registry's
	// address (allowlist): the handler is filled in once both exist.
	var inner atomic.Pointer[http.Handler]
	var submitFn SubmitFunc
	var m *metrics.Metrics
	hook := func(submit SubmitFunc, mm *metrics.Metrics) (http.Handler, error) {
		submitFn, m = submit, mm
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := inner.Load()
			if h == nil {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			(*h).ServeHTTP(w, r)
		}), nil
	}
	s, _ := start(t, Options{Config: testConfig(t), Converter: conv, Webhooks: hook})
	reg := registrytest.NewDistribution(t, registrytest.WithNotifications(
		"http://"+s.Addr()+"/webhooks/distribution", http.Header{"Authorization": {"Bearer " + token}}))
	h, err := webhook.New(webhookSink(submitFn),
		webhook.WithAuth(webhook.SourceDistribution, webhook.Auth{BearerToken: token}),
		webhook.WithAllowedRegistries(reg),
		webhook.WithEventCounter(m.Event))
	if err != nil {
		t.Fatal(err)
	}
	var hh http.Handler = h
	inner.Store(&hh)

	layer := registrytest.Gzip(t, registrytest.Tar(t, "Files/hello.txt", "hello"))
	desc := registrytest.PushImage(t, reg+"/win/app:v1", [][]byte{layer}, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"})
	want := reg + "/win/app@" + desc.Digest.String()
	waitFor(t, func() bool {
		st, err := s.Queue().Status(context.Background(), want)
		return err == nil && st.State == queue.StateSucceeded
	})
	// The same image pushed again under another tag: one more notification,
	// the same idempotency key, no second conversion.
	registrytest.PushImage(t, reg+"/win/app:v1-again", [][]byte{layer}, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"})
	waitFor(t, func() bool {
		_, body := get(t, "http://"+s.Addr()+"/metrics")
		return strings.Contains(body, `cimconv_events_total{outcome="duplicate",source="distribution"}`)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != want {
		t.Errorf("converter saw %v, want exactly [%s]", seen, want)
	}
}
