package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/cimconv/cimconv/internal/testport"
)

// TestServeRefusesBadDockerConfig: a --docker-config that cannot be read
// stops `serve` at start with an error naming the file; /readyz never
// answers ready (instead of every request failing until max-deliver).
func TestServeRefusesBadDockerConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := serveConfig(t)
	cfg.Listen = testport.Addr(t)
	cfg.DockerConfig = bad

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ready atomic.Bool
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			if resp, err := http.Get("http://" + cfg.Listen + "/readyz"); err == nil {
				if resp.StatusCode == http.StatusOK {
					ready.Store(true)
				}
				resp.Body.Close()
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	err := runServe(ctx, cfg, zaptest.NewLogger(t))
	close(done)
	<-polled
	if err == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("serve with a bad docker config: err = %v (it ran until the test's deadline)", err)
	}
	if !strings.Contains(err.Error(), bad) {
		t.Errorf("err = %v, want it to name %s", err, bad)
	}
	if ready.Load() {
		t.Error("/readyz said ready with a bad docker config")
	}
}
