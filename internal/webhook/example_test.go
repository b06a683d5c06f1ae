package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/cimconv/cimconv/internal/webhook"
)

// The service mounts the handler under /webhooks/ and turns accepted events
// into queue requests in its Sink.
func ExampleNew() {
	sink := webhook.SinkFunc(func(ctx context.Context, e webhook.Event) error {
		fmt.Println("queue", e.Source, e.Ref())
		return nil
	})
	h, err := webhook.New(sink,
		webhook.WithAuth("*", webhook.Auth{BearerToken: "from-a-secret-store"}),
		webhook.WithAllowedRegistries("myregistry.azurecr.io/windows"),
	)
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/webhooks/", h)

	body := `{"id":"cb8c3971","action":"push","target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
	  "digest":"sha256:9e4f7d3c5a1b2e8f60d7c4b3a29185e6f0d1c2b3a4958677e8f9a0b1c2d3e4f5","repository":"windows/servercore","tag":"ltsc2022"},
	  "request":{"host":"myregistry.azurecr.io"}}`
	req := httptest.NewRequest(http.MethodPost, "/webhooks/acr", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer from-a-secret-store")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body.String())
	// Output:
	// queue acr myregistry.azurecr.io/windows/servercore@sha256:9e4f7d3c5a1b2e8f60d7c4b3a29185e6f0d1c2b3a4958677e8f9a0b1c2d3e4f5
	// 200 {"accepted":1,"ignored":0}
}
