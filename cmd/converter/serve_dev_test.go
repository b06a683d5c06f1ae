package main

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/service"
	"github.com/cimconv/cimconv/internal/testport"
)

// devServe runs `serve --dev` (runServe, as the command does) until the
// returned stop is called; stop waits for it to end.
func devServe(t *testing.T, cfg service.Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, cfg, zaptest.NewLogger(t)) }()
	waitUntil(t, "serve --dev to be ready", func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		// Up once the sample image is seeded (the dev hook's last step).
		resp, err := http.Get("http://" + cfg.DevRegistry + "/v2/sample/windows/manifests/ltsc2022")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case err := <-done:
		cancel()
		t.Fatalf("serve --dev ended at start: %v", err)
	default:
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve --dev: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func devConfig(t *testing.T) service.Config {
	cfg := serveConfig(t)
	cfg.Dev = true
	cfg.Listen = testport.Addr(t)
	cfg.DevRegistry = testport.Addr(t)
	_, port, _ := net.SplitHostPort(testport.Addr(t))
	cfg.EmbeddedNATSPort, _ = strconv.Atoi(port)
	return cfg
}

// submitSample queues the dev sample image on the service's NATS and waits
// for the result; it fails the test unless the answered artifact exists in
// the dev registry.
func submitSample(t *testing.T, cfg service.Config) *queue.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := queue.Connect(ctx, "nats://127.0.0.1:"+strconv.Itoa(cfg.EmbeddedNATSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	q, err := queue.Open(ctx, nc, queue.WithProvision(false))
	if err != nil {
		t.Fatal(err)
	}
	image := cfg.DevRegistry + "/sample/windows:ltsc2022"
	res, _, err := q.SubmitAndWait(ctx, queue.Request{Image: image, Requester: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != "" || len(res.SubjectDigests) != 1 || len(res.ArtifactDigests) != 1 {
		t.Fatalf("result %+v, want one converted subject", res)
	}
	subject := cfg.DevRegistry + "/sample/windows@" + res.SubjectDigests[0]
	var found []string
	for _, d := range fetchtest.Artifacts(t, fetchtest.NewRegistry(t), subject) {
		found = append(found, d.Digest.String())
	}
	if !strings.Contains(strings.Join(found, " "), res.ArtifactDigests[0]) {
		t.Fatalf("answered artifact %s, but the dev registry holds %v for %s: a success that is not true", res.ArtifactDigests[0], found, subject)
	}
	return res
}

// Issue 9 item 9: after a restart of `serve --dev`, the registry starts
// empty, and so does the rest of the dev state: a second submit converts
// again instead of answering, from the old duplicate window, an artifact
// the new registry does not hold.
func TestServeDevStateIsCoherentAcrossRestarts(t *testing.T) {
	cfg := devConfig(t)
	stop := devServe(t, cfg)
	first := submitSample(t, cfg)
	if first.LayersBuilt == 0 {
		t.Fatalf("first run built no layer: %+v", first)
	}
	stop()

	devServe(t, cfg)
	second := submitSample(t, cfg)
	if second.LayersBuilt+second.LayersCached == 0 {
		t.Fatalf("second run %+v did not convert", second)
	}
}

// Every dev port is a flag, and a busy one is refused naming its flag.
func TestServeDevBusyPortNamesTheFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	_, busyPort, _ := net.SplitHostPort(busy)
	for _, tc := range []struct {
		flag string
		set  func(*service.Config)
	}{
		{"--dev-registry", func(c *service.Config) { c.DevRegistry = busy }},
		{"--listen", func(c *service.Config) { c.Listen = busy }},
		{"--embedded-nats-port", func(c *service.Config) { c.EmbeddedNATSPort, _ = strconv.Atoi(busyPort) }},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			cfg := devConfig(t)
			tc.set(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := runServe(ctx, cfg, zaptest.NewLogger(t))
			if err == nil || !strings.Contains(err.Error(), tc.flag+" ") {
				t.Fatalf("err = %v, want one naming %s", err, tc.flag)
			}
		})
	}
}
