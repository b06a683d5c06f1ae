package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/webhook"
)

// WebhookSink turns accepted push events into conversion requests for the
// pushed manifest (digest-pinned when the event names the digest) and reports
// collapsed duplicates as webhook.ErrDuplicate.
func WebhookSink(submit SubmitFunc) webhook.Sink {
	return webhook.SinkFunc(func(ctx context.Context, e webhook.Event) error {
		req := queue.Request{Image: e.Ref(), Source: "webhook/" + e.Source, Requester: e.ID}
		if e.Digest != "" && e.Tag != "" {
			req.Tag = e.Tag // `status repo:tag` finds the digest-pinned request
		}
		dup, err := submit(ctx, req)
		if err != nil {
			return err
		}
		if dup {
			return webhook.ErrDuplicate
		}
		return nil
	})
}

// ConfigWebhooks builds the /webhooks/ handler from the webhook-* keys: one
// bearer token and/or HMAC secret (read from files, never logged) for every
// endpoint, and the registry allowlist.
func ConfigWebhooks(cfg Config, log *zap.Logger) (WebhooksFunc, error) {
	if log == nil {
		log = zap.NewNop()
	}
	var auth webhook.Auth
	if cfg.WebhookTokenFile != "" {
		b, err := readSecret(cfg.WebhookTokenFile)
		if err != nil {
			return nil, fmt.Errorf("webhook-token-file: %w", err)
		}
		auth.BearerToken = string(b)
	}
	if cfg.WebhookHMACSecretFile != "" {
		b, err := readSecret(cfg.WebhookHMACSecretFile)
		if err != nil {
			return nil, fmt.Errorf("webhook-hmac-secret-file: %w", err)
		}
		auth.HMACSecret = b
	}
	var opts []webhook.Option
	switch {
	case auth.BearerToken != "" || len(auth.HMACSecret) > 0:
		opts = append(opts, webhook.WithAuth("*", auth))
	case cfg.WebhookInsecureNoAuth:
		log.Warn("webhooks accept unauthenticated requests (webhook-insecure-no-auth)")
		opts = append(opts, webhook.WithInsecureNoAuth("*"))
	default:
		log.Warn("webhooks refuse every request: set webhook-token-file or webhook-hmac-secret-file")
	}
	if len(cfg.WebhookAllowedRegistries) == 0 {
		log.Warn("webhooks refuse every event: set webhook-allowed-registries")
	}
	opts = append(opts, webhook.WithAllowedRegistries(cfg.WebhookAllowedRegistries...), webhook.WithLogger(log.Named("webhook")))
	return func(submit SubmitFunc, m *metrics.Metrics) (http.Handler, error) {
		h, err := webhook.New(WebhookSink(submit), append(opts, webhook.WithEventCounter(m.Event))...)
		if err != nil {
			return nil, err
		}
		return h, nil
	}, nil
}

func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil, errors.New(path + " is empty")
	}
	return []byte(s), nil
}
