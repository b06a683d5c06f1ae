package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/queue/queuetest"
	"github.com/cimconv/cimconv/internal/worker"
)

func testConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.Listen = "127.0.0.1:0"
	c.DataDir = t.TempDir()
	c.EmbeddedNATSPort = 0
	c.RetryBackoff = 10 * time.Millisecond
	c.ShutdownGrace = time.Second
	return c
}

// fakeConverter fails images tagged "bad" permanently and records stages.
var fakeConverter = worker.ConverterFunc(func(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
	progress("resolve")
	if strings.HasSuffix(req.Image, ":bad") {
		return nil, worker.Permanent(errors.New("not a Windows image"))
	}
	progress("build")
	return &queue.Result{SubjectDigests: []string{"sha256:" + strings.Repeat("1", 64)}, LayersBuilt: 2, LayersCached: 1, BytesFetched: 1000, BytesPushed: 300}, nil
})

func start(t *testing.T, opts Options) (*Service, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	s, err := Start(ctx, opts)
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
	return s, cancel
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsScrapedFromRunningService(t *testing.T) {
	s, _ := start(t, Options{Config: testConfig(t), Converter: fakeConverter, PendingInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, img := range []string{"reg.example/a:good", "reg.example/b:good", "reg.example/c:bad"} {
		if _, _, err := s.Queue().SubmitAndWait(ctx, queue.Request{Image: img}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		`cimconv_conversions_total{reason="none",result="succeeded"} 2`,
		`cimconv_conversions_total{reason="permanent",result="failed"} 1`,
		`cimconv_stage_duration_seconds_count{result="ok",stage="build"} 2`,
		`cimconv_stage_duration_seconds_count{result="error",stage="resolve"} 1`,
		`cimconv_inflight 0`,
		`cimconv_layers_total{result="built"} 4`,
		`cimconv_layers_total{result="cached"} 2`,
		`cimconv_bytes_total{direction="fetched"} 2000`,
		`cimconv_bytes_total{direction="pushed"} 600`,
		`cimconv_queue_pending 0`,
		`go_goroutines`,
	}
	// A waiter sees the outcome (status, result event) before the worker has
	// updated its counters: scrape until they settle.
	var code int
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body = get(t, "http://"+s.Addr()+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		missing := 0
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	for _, n := range []string{metrics.ConversionsTotal, metrics.StageDurationSeconds, metrics.Inflight, metrics.QueuePending} {
		if !strings.Contains(body, "# TYPE "+n+" ") {
			t.Errorf("/metrics lacks %s", n)
		}
	}
}

func TestQueuePendingGauge(t *testing.T) {
	block := make(chan struct{})
	conv := worker.ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &queue.Result{}, nil
	})
	cfg := testConfig(t)
	cfg.Concurrency = 1
	s, _ := start(t, Options{Config: cfg, Converter: conv, PendingInterval: 50 * time.Millisecond})
	defer close(block)
	ctx := context.Background()
	for i := range 4 {
		if _, err := s.Queue().Submit(ctx, queue.Request{Image: fmt.Sprintf("reg.example/p:%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := get(t, "http://"+s.Addr()+"/metrics")
		if strings.Contains(body, "\ncimconv_queue_pending 4\n") && strings.Contains(body, "\ncimconv_inflight 1\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want pending 4 (3 waiting + 1 unacked) and inflight 1:\n%s", grep(body, "cimconv_"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestReadyzFollowsNATS(t *testing.T) {
	nsrv := queuetest.Embedded(t)
	cfg := testConfig(t)
	cfg.NATSURL = nsrv.URL
	s, _ := start(t, Options{Config: cfg, Converter: fakeConverter})
	base := "http://" + s.Addr()
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz with NATS up: %d %s", code, body)
	}
	nsrv.Stop()
	waitCode(t, base+"/readyz", http.StatusServiceUnavailable)
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d while NATS is down: the process is alive", code)
	}
	nsrv.Start() // same port and store
	waitCode(t, base+"/readyz", http.StatusOK)
}

func waitCode(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get(t, url)
		if code == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q, want %d", url, code, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWebhooksAreMounted(t *testing.T) {
	hook := func(submit SubmitFunc, m *metrics.Metrics) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			img := r.URL.Query().Get("image")
			dup, err := submit(r.Context(), queue.Request{Image: img, Source: "webhook/test"})
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			m.Event("test", map[bool]string{true: "duplicate", false: "queued"}[dup])
			fmt.Fprintf(w, "%s dup=%v", r.URL.Path, dup)
		}), nil
	}
	s, _ := start(t, Options{Config: testConfig(t), Converter: fakeConverter, Webhooks: hook})
	base := "http://" + s.Addr()
	for i, want := range []string{"/webhooks/test dup=false", "/webhooks/test dup=true"} {
		resp, err := http.Post(base+"/webhooks/test?image=reg.example/w:good", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Errorf("post %d: %q, want %q", i, b, want)
		}
	}
	waitFor(t, func() bool {
		st, err := s.Queue().Status(context.Background(), "reg.example/w:good")
		return err == nil && st.State == queue.StateSucceeded
	})
	_, body := get(t, base+"/metrics")
	if !strings.Contains(body, `cimconv_events_total{outcome="duplicate",source="test"} 1`) {
		t.Errorf("webhook events not counted:\n%s", grep(body, "events"))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	queuetest.WaitFor(t, "the condition", cond)
}

func TestStartRefusesWhatIsNotWired(t *testing.T) {
	cfg := testConfig(t)
	if _, err := Start(context.Background(), Options{Config: cfg}); !errors.Is(err, ErrNotWired) || !strings.Contains(err.Error(), "conversion is not wired") {
		t.Errorf("no converter: err = %v", err)
	}
	cfg.Dev = true
	if _, err := Start(context.Background(), Options{Config: cfg, Converter: fakeConverter}); !errors.Is(err, ErrNotWired) || !strings.Contains(err.Error(), "--dev") {
		t.Errorf("--dev without hook: err = %v", err)
	}
}

func TestDevHookRuns(t *testing.T) {
	cfg := testConfig(t)
	cfg.Dev = true
	got := make(chan DevEnv, 1)
	s, _ := start(t, Options{Config: cfg, Converter: fakeConverter, Dev: func(ctx context.Context, env DevEnv) error {
		got <- env
		return nil
	}})
	env := <-got
	if env.HTTPAddr != s.Addr() || env.NATSURL != s.NATSURL() || env.Queue == nil {
		t.Errorf("dev env %+v", env)
	}
	cfg2 := testConfig(t)
	cfg2.Dev = true
	_, err := Start(context.Background(), Options{Config: cfg2, Converter: fakeConverter, Dev: func(context.Context, DevEnv) error {
		return errors.New("no sample image")
	}})
	if err == nil || !strings.Contains(err.Error(), "no sample image") {
		t.Errorf("failing dev hook: err = %v", err)
	}
}

func TestReadyzTurnsFalseOnShutdown(t *testing.T) {
	started := make(chan struct{}, 1)
	conv := worker.ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	cfg := testConfig(t)
	cfg.ShutdownGrace = 3 * time.Second
	s, cancel := start(t, Options{Config: cfg, Converter: conv})
	base := "http://" + s.Addr()
	if _, err := s.Queue().Submit(context.Background(), queue.Request{Image: "reg.example/r:1"}); err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	// The conversion holds the service in its grace period: HTTP still
	// answers, but no longer ready.
	waitCode(t, base+"/readyz", http.StatusServiceUnavailable)
	if code, body := get(t, base+"/readyz"); !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz during shutdown: %d %q", code, body)
	}
}

// /readyz of a process that converts follows the request consumer: while it
// is gone (`nats consumer rm`) the worker can pull nothing, so it is not
// ready; it re-creates the consumer at its next pull and converts again. A
// webhook-only process does not consume and stays ready. Before, /readyz
// said ready throughout, and the worker never pulled again (it logged "pull
// failed; retrying" until restarted).
func TestReadyzFollowsTheRequestConsumer(t *testing.T) {
	release := make(chan struct{})
	running := make(chan struct{}, 1)
	conv := worker.ConverterFunc(func(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
		if strings.HasSuffix(req.Image, ":slow") {
			select {
			case running <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return fakeConverter(ctx, req, progress)
	})
	cfg := testConfig(t)
	cfg.Concurrency = 1 // the slow conversion holds the only slot: no pull until it ends
	s, _ := start(t, Options{Config: cfg, Converter: conv})
	hookCfg := testConfig(t)
	hookCfg.Role, hookCfg.NATSURL = RoleWebhook, s.NATSURL()
	hook, _ := start(t, Options{Config: hookCfg})
	workerReady, hookReady := "http://"+s.Addr()+"/readyz", "http://"+hook.Addr()+"/readyz"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := s.Queue().Submit(ctx, queue.Request{Image: "reg.example/r:slow"}); err != nil {
		t.Fatal(err)
	}
	<-running
	js, err := jetstream.New(queuetest.Connect(t, s.NATSURL()))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(ctx, queue.StreamName, queue.ConsumerName); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, workerReady); code != http.StatusServiceUnavailable || !strings.Contains(body, queue.ConsumerName) {
		t.Errorf("worker /readyz without its consumer: %d %q, want 503 naming the consumer", code, body)
	}
	if code, body := get(t, hookReady); code != http.StatusOK {
		t.Errorf("webhook-only /readyz without the consumer: %d %q, want 200", code, body)
	}

	close(release) // the worker pulls again, finds the consumer gone and re-creates it
	waitCode(t, workerReady, http.StatusOK)
	res, _, err := s.Queue().SubmitAndWait(ctx, queue.Request{Image: "reg.example/r:after"})
	if err != nil || !res.Succeeded() {
		t.Fatalf("a request after the consumer was re-created: %+v %v", res, err)
	}
}

func TestRoles(t *testing.T) {
	hook := func(submit SubmitFunc, m *metrics.Metrics) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := submit(r.Context(), queue.Request{Image: r.URL.Query().Get("image")}); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
			}
		}), nil
	}
	t.Run("webhook role queues but does not convert", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Role = RoleWebhook
		// No converter: a webhook-only process must start without one.
		s, _ := start(t, Options{Config: cfg, Webhooks: hook, PendingInterval: 20 * time.Millisecond})
		resp, err := http.Post("http://"+s.Addr()+"/webhooks/x?image=reg.example/r:good", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("webhook answered %d", resp.StatusCode)
		}
		waitFor(t, func() bool { n, err := s.Queue().Pending(context.Background()); return err == nil && n == 1 })
		time.Sleep(200 * time.Millisecond)
		if n, _ := s.Queue().Pending(context.Background()); n != 1 {
			t.Fatalf("pending = %d: something consumed the request in a webhook-only process", n)
		}
	})
	t.Run("worker role serves no webhooks", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Role = RoleWorker
		s, _ := start(t, Options{Config: cfg, Converter: fakeConverter, Webhooks: hook})
		if code, _ := get(t, "http://"+s.Addr()+"/webhooks/x?image=a"); code != http.StatusNotFound {
			t.Fatalf("worker role: /webhooks/ answered %d, want 404", code)
		}
	})
	t.Run("bad role", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Role = "both"
		if _, err := Start(context.Background(), Options{Config: cfg, Converter: fakeConverter}); err == nil || !strings.Contains(err.Error(), "role") {
			t.Fatalf("err = %v", err)
		}
	})
}
