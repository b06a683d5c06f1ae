package service

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The start-up line says what the process runs: a webhook-only process
// converts nothing, so it logs no worker concurrency; a worker does.
func TestServingLineFollowsRole(t *testing.T) {
	for _, tc := range []struct {
		role            string
		wantConcurrency bool
	}{{RoleWebhook, false}, {RoleWorker, true}, {RoleAll, true}} {
		t.Run(tc.role, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			cfg := testConfig(t)
			cfg.Role = tc.role
			opts := Options{Config: cfg, Logger: zap.New(core)}
			if tc.role != RoleWebhook {
				opts.Converter = fakeConverter
			}
			start(t, opts)
			lines := logs.FilterMessage("serving").AllUntimed()
			if len(lines) != 1 {
				t.Fatalf("%d \"serving\" lines, want 1", len(lines))
			}
			ctx := lines[0].ContextMap()
			if _, ok := ctx["concurrency"]; ok != tc.wantConcurrency {
				t.Errorf("role %s: serving line %v; concurrency logged = %v, want %v", tc.role, ctx, ok, tc.wantConcurrency)
			}
			if ctx["role"] != tc.role {
				t.Errorf("role %s: serving line %v does not name the role", tc.role, ctx)
			}
		})
	}
}
