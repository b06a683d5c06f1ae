package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/queue/queuetest"
)

// scripted behaves per image tag: "ok", "transient2" (fails twice, then
// succeeds), "permanent", "unknown" (unclassified error), "block" (waits for
// its context), "slow" (takes 2.5s). It records every call.
type scripted struct {
	mu    sync.Mutex
	calls map[string]int
	by    map[string][]string // image -> worker names that succeeded
	name  string
}

func newScripted(name string) *scripted {
	return &scripted{calls: map[string]int{}, by: map[string][]string{}, name: name}
}

func (s *scripted) Convert(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
	s.mu.Lock()
	s.calls[req.Image]++
	n := s.calls[req.Image]
	s.mu.Unlock()
	tag := req.Image[strings.LastIndex(req.Image, ":")+1:]
	progress("resolve")
	progress("build")
	switch {
	case tag == "permanent":
		return nil, Permanent(errors.New("no windows/amd64 manifest"))
	case tag == "panic":
		var m map[string]int
		m["boom"]++ // a converter bug
	case tag == "unknown":
		return nil, errors.New("something odd")
	case strings.HasPrefix(tag, "transient"):
		var k int
		fmt.Sscanf(tag, "transient%d", &k)
		if n <= k {
			return nil, Transient(fmt.Errorf("registry said 503 (call %d)", n))
		}
	case tag == "block":
		<-ctx.Done()
		return nil, ctx.Err()
	case tag == "slow":
		time.Sleep(2500 * time.Millisecond)
	}
	progress("push")
	s.mu.Lock()
	s.by[req.Image] = append(s.by[req.Image], s.name)
	s.mu.Unlock()
	return &queue.Result{SubjectDigests: []string{"sha256:" + strings.Repeat("d", 64)}, ArtifactDigests: []string{"sha256:" + strings.Repeat("e", 64)}, LayersBuilt: 1}, nil
}

func (s *scripted) count(image string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[image]
}

type env struct {
	srv  *queuetest.Server
	q    *queue.Queue
	opts []queue.Option
}

func newEnv(t *testing.T, opts ...queue.Option) *env {
	t.Helper()
	e := &env{srv: queuetest.Embedded(t), opts: append([]queue.Option{queue.WithAckWait(time.Second), queue.WithMaxDeliver(4)}, opts...)}
	e.q = e.open(t)
	return e
}

// open gives a queue on its own connection (a separate "process").
func (e *env) open(t *testing.T) *queue.Queue {
	t.Helper()
	q, err := queue.Open(context.Background(), queuetest.Connect(t, e.srv.URL), e.opts...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func startWorker(t *testing.T, q *queue.Queue, c Converter, opts ...Option) (stop func()) {
	t.Helper()
	w, err := New(q, c, append([]Option{
		WithLogger(zaptest.NewLogger(t)), WithRetryBackoff(20*time.Millisecond, 100*time.Millisecond),
		WithFetchWait(200 * time.Millisecond), WithHeartbeat(200 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func ctxT(t *testing.T) context.Context { return queuetest.Context(t, 60*time.Second) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	queuetest.WaitFor(t, what, cond)
}

// settled waits until q has nothing pending or unacknowledged: no request
// can be delivered again.
func settled(t *testing.T, q *queue.Queue) {
	t.Helper()
	waitFor(t, "nothing pending or unacknowledged", func() bool {
		n, err := q.Pending(context.Background())
		return err == nil && n == 0
	})
}

func TestOutcomes(t *testing.T) {
	tests := []struct {
		tag        string
		wantOK     bool
		wantCalls  int
		wantReason string
		wantState  queue.State
		metric     [2]string
	}{
		{"ok", true, 1, "", queue.StateSucceeded, [2]string{metrics.ResultSucceeded, metrics.ReasonNone}},
		{"transient2", true, 3, "", queue.StateSucceeded, [2]string{metrics.ResultRetried, metrics.ReasonTransient}},
		{"permanent", false, 1, "permanent", queue.StateDead, [2]string{metrics.ResultFailed, metrics.ReasonPermanent}},
		{"unknown", false, 4, "max_deliver", queue.StateDead, [2]string{metrics.ResultFailed, metrics.ReasonMaxDeliver}},
		{"panic", false, 1, "permanent", queue.StateDead, [2]string{metrics.ResultFailed, metrics.ReasonPermanent}},
	}
	for _, tt := range tests {
		t.Run(tt.tag, func(t *testing.T) {
			e := newEnv(t)
			conv := newScripted("w1")
			m, reg := newMetrics()
			startWorker(t, e.q, conv, WithMetrics(m))
			ctx := ctxT(t)
			img := "registry.example/app:" + tt.tag
			res, _, err := e.q.SubmitAndWait(ctx, queue.Request{Image: img})
			if err != nil {
				t.Fatal(err)
			}
			if res.Succeeded() != tt.wantOK || res.Reason != tt.wantReason || res.Attempts != tt.wantCalls {
				t.Errorf("result %+v; want ok=%v reason=%q attempts=%d", res, tt.wantOK, tt.wantReason, tt.wantCalls)
			}
			if n := conv.count(img); n != tt.wantCalls {
				t.Errorf("%d conversions, want %d", n, tt.wantCalls)
			}
			st, err := e.q.Status(ctx, img)
			if err != nil || st.State != tt.wantState || st.Attempts != tt.wantCalls {
				t.Errorf("status %+v (%v), want %s after %d attempts", st, err, tt.wantState, tt.wantCalls)
			}
			// The outcome is visible to waiters before the dead letter and
			// the counters are written: give them a moment to settle.
			wantDead := tt.wantState == queue.StateDead
			var dead []queue.DeadLetter
			metric := fmt.Sprintf(`cimconv_conversions_total{reason=%q,result=%q}`, tt.metric[1], tt.metric[0])
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				dead, _ = e.q.Dead(ctx)
				if ((len(dead) == 1) == wantDead && strings.Contains(metricsText(t, reg), metric)) || time.Now().After(deadline) {
					break
				}
			}
			if (len(dead) == 1) != wantDead {
				t.Errorf("%d dead letters, want dead=%v", len(dead), wantDead)
			} else if wantDead && (dead[0].Reason != tt.wantReason || !strings.Contains(dead[0].Error, "stage build")) {
				t.Errorf("dead letter %+v", dead[0])
			}
			if tt.wantOK {
				if st, err := e.q.Status(ctx, res.SubjectDigests[0]); err != nil || st.State != queue.StateSucceeded {
					t.Errorf("status by subject digest: %+v %v", st, err)
				}
			}
			text := metricsText(t, reg)
			if !strings.Contains(text, metric) {
				t.Errorf("metric for %v missing:\n%s", tt.metric, text)
			}
			if !strings.Contains(text, `cimconv_stage_duration_seconds_count{result="ok",stage="resolve"}`) {
				t.Errorf("stage metric missing:\n%s", text)
			}
		})
	}
}

func newMetrics() (*metrics.Metrics, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return metrics.New(reg), reg
}

// metricsText lists the series of reg, one "name{labels}" a line.
// metricsText lists the series reg has seen move (zero-valued counters and
// empty histograms left out), one per line.
func metricsText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	var b strings.Builder
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			// Counters and histograms start at 0 for known labels (so
			// that increase() sees the first event): list what happened.
			if c := s.GetCounter(); c != nil && c.GetValue() == 0 {
				continue
			}
			if h := s.GetHistogram(); h != nil && h.GetSampleCount() == 0 {
				continue
			}
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			name := mf.GetName()
			if s.GetHistogram() != nil {
				name += "_count"
			}
			fmt.Fprintf(&b, "%s{%s}\n", name, strings.Join(labels, ","))
		}
	}
	return b.String()
}

func TestPoisonMessageGoesDead(t *testing.T) {
	e := newEnv(t)
	m, reg := newMetrics()
	startWorker(t, e.q, newScripted("w"), WithMetrics(m))
	ctx := ctxT(t)
	nc := queuetest.Connect(t, e.srv.URL)
	// Published with core NATS: the stream captures it like any request.
	if err := nc.Publish(queue.SubjectRequest, []byte(`{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":""}}`)); err != nil {
		t.Fatal(err)
	}
	var dead []queue.DeadLetter
	waitFor(t, "poison dead letter", func() bool { dead, _ = e.q.Dead(ctx); return len(dead) == 1 })
	if dead[0].Reason != metrics.ReasonUnparseable || dead[0].Attempts != 1 {
		t.Errorf("dead letter %+v", dead[0])
	}
	if !strings.Contains(metricsText(t, reg), `reason="unparseable",result="failed"`) {
		t.Error("unparseable not counted")
	}
}

func TestHeartbeatsPreventRedelivery(t *testing.T) {
	e := newEnv(t) // AckWait 1s; the conversion takes 2.5s
	conv := newScripted("w")
	startWorker(t, e.q, conv)
	res, _, err := e.q.SubmitAndWait(ctxT(t), queue.Request{Image: "registry.example/app:slow"})
	if err != nil || !res.Succeeded() {
		t.Fatalf("%+v %v", res, err)
	}
	if n := conv.count("registry.example/app:slow"); n != 1 || res.Attempts != 1 {
		t.Errorf("%d conversions, attempt %d: heartbeats did not hold the delivery", n, res.Attempts)
	}
}

func TestKilledWorkerIsRedeliveredOnce(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	// Worker 1 runs on its own connection; its conversion blocks.
	nc1 := queuetest.Connect(t, e.srv.URL)
	q1, err := queue.Open(ctx, nc1, e.opts...)
	if err != nil {
		t.Fatal(err)
	}
	var started atomic.Bool
	blocker := ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		started.Store(true)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	stop1 := startWorker(t, q1, blocker, WithShutdownGrace(0))
	img := "registry.example/app:v1"
	if _, err := e.q.Submit(ctx, queue.Request{Image: img}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "worker 1 to start converting", started.Load)
	// Kill: the connection drops first, so worker 1 can neither heartbeat,
	// ack nor NAK; only the ack wait brings the request back.
	nc1.Close()
	stop1()
	conv2 := newScripted("w2")
	startWorker(t, e.open(t), conv2)
	waitFor(t, "worker 2 to succeed", func() bool {
		st, err := e.q.Status(ctx, img)
		return err == nil && st.State == queue.StateSucceeded
	})
	settled(t, e.q) // acknowledged: no further delivery can come
	if n := conv2.count(img); n != 1 {
		t.Errorf("worker 2 converted %d times, want exactly 1", n)
	}
	st, _ := e.q.Status(ctx, img)
	if st.Attempts != 2 {
		t.Errorf("succeeded on attempt %d, want 2", st.Attempts)
	}
}

func TestGracefulShutdown(t *testing.T) {
	// A long ack wait: a redelivery within seconds proves an explicit NAK.
	e := newEnv(t, queue.WithAckWait(time.Minute))
	ctx := ctxT(t)
	var phase atomic.Int32
	conv := ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		if strings.HasSuffix(req.Image, ":short") {
			phase.Store(1)
			time.Sleep(300 * time.Millisecond) // finishes within the grace period
			return &queue.Result{}, nil
		}
		phase.Store(2)
		<-ctx.Done() // never finishes by itself
		return nil, ctx.Err()
	})
	m, reg := newMetrics()
	stop := startWorker(t, e.q, conv, WithShutdownGrace(time.Second), WithMetrics(m), WithConcurrency(1))
	if _, err := e.q.Submit(ctx, queue.Request{Image: "registry.example/app:short"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "short conversion running", func() bool { return phase.Load() == 1 })
	stop()
	st, err := e.q.Status(ctx, "registry.example/app:short")
	if err != nil || st.State != queue.StateSucceeded {
		t.Fatalf("conversion within the grace period: %+v %v", st, err)
	}

	stop = startWorker(t, e.q, conv, WithShutdownGrace(200*time.Millisecond), WithMetrics(m), WithConcurrency(1))
	if _, err := e.q.Submit(ctx, queue.Request{Image: "registry.example/app:long"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "long conversion running", func() bool { return phase.Load() == 2 })
	stop()
	if !strings.Contains(metricsText(t, reg), `reason="shutdown",result="retried"`) {
		t.Error("shutdown NAK not counted")
	}
	conv2 := newScripted("w2")
	startWorker(t, e.open(t), conv2)
	waitFor(t, "NAKed request redelivered well before the ack wait", func() bool { return conv2.count("registry.example/app:long") == 1 })
}

func TestNATSRestartMidRun(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	conv := newScripted("w")
	var slow atomic.Int32
	c := ConverterFunc(func(ctx context.Context, req queue.Request, p func(string)) (*queue.Result, error) {
		slow.Add(1)
		time.Sleep(50 * time.Millisecond)
		return conv.Convert(ctx, req, p)
	})
	startWorker(t, e.q, c, WithConcurrency(2))
	submit := func(i int) {
		for {
			_, err := e.q.Submit(ctx, queue.Request{Image: fmt.Sprintf("registry.example/app:r%d", i)})
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := range 10 {
		submit(i)
	}
	waitFor(t, "some conversions before the restart", func() bool { return slow.Load() >= 2 })
	e.srv.Stop()
	e.srv.Start() // same port and store
	for i := 10; i < 20; i++ {
		submit(i)
	}
	waitFor(t, "all 20 succeeded", func() bool {
		for i := range 20 {
			st, err := e.q.Status(ctx, fmt.Sprintf("registry.example/app:r%d", i))
			if err != nil || st.State != queue.StateSucceeded {
				return false
			}
		}
		return true
	})
}

func TestIsPermanent(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"plain", errors.New("x"), false},
		{"marked permanent", Permanent(errors.New("x")), true},
		{"wrapped permanent", fmt.Errorf("stage build: %w", Permanent(errors.New("x"))), true},
		{"transient wins over permanent", Transient(Permanent(errors.New("x"))), false},
		{"invalid request", fmt.Errorf("decode: %w", queue.ErrInvalidRequest), true},
		{"context canceled", context.Canceled, false},
	}
	for _, tt := range tests {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("%s: IsPermanent = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNewRefusesMissingConverter(t *testing.T) {
	e := newEnv(t)
	if _, err := New(e.q, nil); err == nil || !strings.Contains(err.Error(), "not wired") {
		t.Errorf("err = %v", err)
	}
	if _, err := New(e.q, newScripted("w"), WithHeartbeat(time.Second)); err == nil {
		t.Error("a heartbeat as long as the ack wait was accepted")
	}
}

func TestShutdownOnLastDeliveryRequeues(t *testing.T) {
	e := newEnv(t, queue.WithAckWait(time.Minute), queue.WithMaxDeliver(1))
	ctx := ctxT(t)
	started := make(chan struct{}, 1)
	blocker := ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	stop := startWorker(t, e.q, blocker, WithShutdownGrace(100*time.Millisecond))
	img := "registry.example/app:last"
	if _, err := e.q.Submit(ctx, queue.Request{Image: img}); err != nil {
		t.Fatal(err)
	}
	<-started
	stop()
	conv := newScripted("w2")
	startWorker(t, e.open(t), conv)
	waitFor(t, "requeued request converted", func() bool {
		st, err := e.q.Status(ctx, img)
		return err == nil && st.State == queue.StateSucceeded
	})
	if dead, _ := e.q.Dead(ctx); len(dead) != 0 {
		t.Errorf("interrupted last delivery was dead-lettered: %+v", dead)
	}
}

// A delivery redelivered while its first attempt still runs (a NATS
// election can lose the first one's heartbeats) may fail after the first
// attempt succeeded and acked: it must not leave a dead letter for a request
// whose artifact exists. Otherwise a failure is dead-lettered as before.
func TestFailureAfterAnotherAttemptSucceededIsNotDeadLettered(t *testing.T) {
	for _, tc := range []struct {
		name      string
		succeeded bool // the status says another attempt succeeded
		wantDead  int
	}{
		{"another attempt succeeded", true, 0},
		{"no other attempt", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := ctxT(t)
			img := "registry.example/app:twice"
			if _, err := e.q.Submit(ctx, queue.Request{Image: img}); err != nil {
				t.Fatal(err)
			}
			handleDeliveries(t, e, 1, func(ctx context.Context, w *Worker, d *queue.Delivery) {
				j := newJob(w, d, d.Attempt)
				if tc.succeeded {
					j.setStatus(ctx, queue.StateSucceeded, nil)
				}
				j.failed(ctx, Permanent(errors.New("lost the build claim")))
			})
			dead, err := e.q.Dead(ctx)
			if err != nil || len(dead) != tc.wantDead {
				t.Fatalf("%d dead letters (%v), want %d", len(dead), err, tc.wantDead)
			}
			settled(t, e.q)
		})
	}
}

// The other order: a later delivery, on its last attempt, is dead-lettered
// while an earlier one still runs; then the earlier one succeeds. The
// success shows, and the dead letter (false: the artifact exists) goes.
func TestSuccessAfterAnotherAttemptWasDeadLetteredRemovesTheDeadLetter(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	img := "registry.example/app:late-success"
	if _, err := e.q.Submit(ctx, queue.Request{Image: "registry.example/app:unrelated"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Submit(ctx, queue.Request{Image: img}); err != nil {
		t.Fatal(err)
	}
	handleDeliveries(t, e, 2, func(ctx context.Context, w *Worker, d *queue.Delivery) {
		if d.Request.Image != img {
			// Another request's dead letter, which must stay.
			newJob(w, d, d.Attempt).failed(ctx, Permanent(errors.New("not windows")))
			return
		}
		newJob(w, d, 2).failed(ctx, Permanent(errors.New("lost the build claim"))) // the later delivery
		newJob(w, d, 1).succeeded(ctx, &queue.Result{LayersBuilt: 1})              // the earlier one
	})
	dead, err := e.q.Dead(ctx)
	if err != nil || len(dead) != 1 || dead[0].Request == nil || dead[0].Request.Image != "registry.example/app:unrelated" {
		var images []string
		for _, d := range dead {
			if d.Request != nil {
				images = append(images, d.Request.Image)
			}
		}
		t.Fatalf("dead letters of %v (%v), want only the unrelated request's", images, err)
	}
	st, err := e.q.Status(ctx, img)
	if err != nil || st.State != queue.StateSucceeded {
		t.Fatalf("status %+v (%v), want succeeded", st, err)
	}
}

// A request redelivered to the same worker while that worker still
// converts it (heartbeats lost) waits for the first delivery to end instead
// of converting beside it and racing it for the build claims.
func TestRedeliveryToTheSameWorkerWaitsForTheFirst(t *testing.T) {
	e := newEnv(t) // AckWait 1s
	ctx := ctxT(t)
	img := "registry.example/app:redelivered"
	var mu sync.Mutex
	var running, overlap, calls int
	conv := ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		mu.Lock()
		calls++
		first := calls == 1
		running++
		if running > 1 {
			overlap++
		}
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		if first {
			// Until the redelivery is being handled, and a little longer.
			waitFor(t, "the redelivery", func() bool {
				st, err := e.q.Status(ctx, img)
				return err == nil && st.Attempts >= 2
			})
			time.Sleep(300 * time.Millisecond)
		}
		return &queue.Result{LayersBuilt: 1}, nil
	})
	w, err := New(e.q, conv, WithLogger(zaptest.NewLogger(t)), WithConcurrency(2), WithFetchWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	w.heartbeat = time.Hour // lose the heartbeats: the ack wait runs out mid-conversion
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(cctx) }()
	defer func() { cancel(); <-done }()
	if _, err := e.q.Submit(ctx, queue.Request{Image: img}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a conversion after the first", func() bool { mu.Lock(); defer mu.Unlock(); return calls >= 2 && running == 0 })
	mu.Lock()
	defer mu.Unlock()
	if overlap != 0 {
		t.Fatalf("%d conversions of the request ran beside another in the same worker", overlap)
	}
}

// handleDeliveries runs h on the next n deliveries of e's queue, with a
// worker to settle them through, and returns when all n are handled.
func handleDeliveries(t *testing.T, e *env, n int, h func(ctx context.Context, w *Worker, d *queue.Delivery)) {
	t.Helper()
	w, err := New(e.q, newScripted("w"), WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	handled := make(chan struct{}, n)
	go func() {
		_ = e.q.Consume(ctx, func(ctx context.Context, d *queue.Delivery) {
			defer func() { handled <- struct{}{} }()
			h(ctx, w, d)
		}, queue.WithConcurrency(1))
	}()
	for range n {
		<-handled
	}
}

// newJob is the job handle would make for d, as attempt attempts.
func newJob(w *Worker, d *queue.Delivery, attempts int) *job {
	return &job{w: w, d: d, log: w.log, status: queue.Status{Image: d.Request.Image, Key: d.Key(), Seq: d.Seq, Attempts: attempts}}
}

// A webhook request (digest-pinned image + Tag) records its status under
// the digest and under repo:tag: a dead letter makes both "dead", or
// repo:tag would say "running" forever.
func TestDeadLetterUpdatesTheTagStatus(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	conv := ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		return nil, Permanent(errors.New("no windows/amd64 manifest"))
	})
	startWorker(t, e.q, conv)
	img := "registry.example/app@sha256:" + strings.Repeat("a", 64)
	req := queue.Request{Image: img, Tag: "v1"}
	res, _, err := e.q.SubmitAndWait(ctx, req)
	if err != nil || res.Succeeded() {
		t.Fatalf("result %+v %v; want a failure", res, err)
	}
	settled(t, e.q)
	byDigest, err := e.q.Status(ctx, img)
	if err != nil || byDigest.State != queue.StateDead {
		t.Fatalf("status by digest %+v %v; want dead", byDigest, err)
	}
	byTag, err := e.q.Status(ctx, "registry.example/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if byTag.State != queue.StateDead {
		t.Errorf("status by repo:tag is %q (seq %d, attempts %d), want %q like the digest's: the dead letter only updated %s",
			byTag.State, byTag.Seq, byTag.Attempts, queue.StateDead, img)
	}
}

// A parked delivery that wins a build claim (the previous holder
// released it without a value: its build failed) keeps the claim while it
// waits in Unpark for a slot. When the slot's holder needs the same chain, it
// must park too, even with the parked capacity (1 here) used up, or each
// waits for the other forever: the claim renews itself and both deliveries
// heartbeat, so nothing breaks the cycle.
func TestParkedClaimWinnerAndSlotHolderBothFinish(t *testing.T) {
	e := newEnv(t, queue.WithAckWait(3*time.Second))
	ctx := ctxT(t)
	chains := e.q.Chains()
	key := "sha256:" + strings.Repeat("c", 64)
	other, _, err := chains.Claim(ctx, key, "other-worker", time.Minute)
	if err != nil || other == nil {
		t.Fatalf("claim: %v", err)
	}
	cc := &chainsCache{c: chains, worker: "this-worker", ttl: 3 * time.Second, held: map[string]*queue.Claim{}}
	qStarted, goQ := make(chan struct{}), make(chan struct{})
	conv := ConverterFunc(func(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
		progress("build")
		if strings.HasSuffix(req.Image, ":q") {
			close(qStarted)
			select {
			case <-goQ:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		_, won, err := cc.Acquire(convert.WithLayer(ctx, 1, 1), key)
		if err != nil {
			return nil, err
		}
		if won {
			if err := cc.Put(ctx, key, []byte("layer")); err != nil {
				return nil, err
			}
			_ = cc.Release(ctx, key)
		}
		return &queue.Result{}, nil
	})
	startWorker(t, e.q, conv, WithConcurrency(1), WithMaxParked(1), WithHeartbeat(500*time.Millisecond), WithShutdownGrace(100*time.Millisecond))
	p, q := "registry.example/app:p", "registry.example/app:q"
	if _, err := e.q.Submit(ctx, queue.Request{Image: p}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "p parked, waiting for other-worker", func() bool {
		st, err := e.q.Status(ctx, p)
		return err == nil && strings.Contains(st.Detail, "held by worker other-worker")
	})
	if _, err := e.q.Submit(ctx, queue.Request{Image: q}); err != nil {
		t.Fatal(err)
	}
	<-qStarted // q holds the only slot
	// other-worker's build failed: it releases its claim without a value.
	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // p wins the claim, then waits for a slot
	close(goQ)                         // q needs the same chain
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sp, _ := e.q.Status(ctx, p)
		sq, _ := e.q.Status(ctx, q)
		if sp != nil && sq != nil && sp.State == queue.StateSucceeded && sq.State == queue.StateSucceeded {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	sp, _ := e.q.Status(ctx, p)
	sq, _ := e.q.Status(ctx, q)
	t.Fatalf("after 10s: p %s %q, q %s %q; want both succeeded", sp.State, sp.Detail, sq.State, sq.Detail)
}
