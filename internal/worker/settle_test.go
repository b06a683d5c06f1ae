package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/queue/queuetest"
)

// A conversion longer than every internal timeout (ack wait, heartbeat,
// settle timeout, claim ttl) is settled once: status, ack, result event
// (issue 9 #1: the settle deadline started with the conversion).
func TestLongConversionIsSettled(t *testing.T) {
	e := newEnv(t) // ack wait 1s
	ctx := ctxT(t)
	long := ConverterFunc(func(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
		progress("build")
		// Longer than the ack wait (1s) and the settle timeout (100ms):
		// not an assertion, the length of the work.
		time.Sleep(1500 * time.Millisecond)
		return &queue.Result{SubjectDigests: []string{"sha256:" + strings.Repeat("d", 64)}, ArtifactDigests: []string{"sha256:" + strings.Repeat("e", 64)}}, nil
	})
	m, reg := newMetrics()
	startWorker(t, e.q, long, WithSettleTimeout(100*time.Millisecond), WithMetrics(m))
	img := "registry.example/app:long"
	res, _, err := e.q.SubmitAndWait(ctx, queue.Request{Image: img})
	if err != nil || !res.Succeeded() || res.Attempts != 1 {
		t.Fatalf("result %+v, %v; want success on attempt 1", res, err)
	}
	settled(t, e.q)
	st, err := e.q.Status(ctx, img)
	if err != nil || st.State != queue.StateSucceeded || st.Attempts != 1 {
		t.Fatalf("status %+v, %v; want succeeded after 1 attempt", st, err)
	}
	if !strings.Contains(metricsText(t, reg), `cimconv_conversions_total{reason="none",result="succeeded"}`) {
		t.Error("success not counted")
	}
}

// A request waiting for another worker's build claim says so in its status
// and gives its slot to other work meanwhile (issue 9 #2).
func TestClaimWaitIsVisibleAndReleasesTheSlot(t *testing.T) {
	e := newEnv(t, queue.WithAckWait(3*time.Second))
	ctx := ctxT(t)
	chains := e.q.Chains()
	key := "sha256:" + strings.Repeat("a", 64)
	other, _, err := chains.Claim(ctx, key, "other-worker", time.Minute)
	if err != nil || other == nil {
		t.Fatalf("claim: %v", err)
	}
	defer other.Release(ctx)
	cc := &chainsCache{c: chains, worker: "this-worker", ttl: time.Minute, held: map[string]*queue.Claim{}}
	conv := ConverterFunc(func(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
		progress("build")
		if strings.HasSuffix(req.Image, ":waits") {
			v, won, err := cc.Acquire(convert.WithLayer(ctx, 2, 3), key)
			if err != nil || won || string(v) != "layer" {
				t.Errorf("acquire: %q won=%v err=%v", v, won, err)
			}
		}
		return &queue.Result{SubjectDigests: []string{"sha256:" + strings.Repeat("d", 64)}}, nil
	})
	startWorker(t, e.q, conv, WithConcurrency(1), WithHeartbeat(500*time.Millisecond))
	waits, free := "registry.example/app:waits", "registry.example/app:free"
	if _, err := e.q.Submit(ctx, queue.Request{Image: waits}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the waiting status", func() bool {
		st, err := e.q.Status(ctx, waits)
		return err == nil && st.State == queue.StateRunning && st.Detail == "waiting for layer 2/3 (held by worker other-worker)"
	})
	// One slot, taken by the waiting request: the other one still runs.
	if _, err := e.q.Submit(ctx, queue.Request{Image: free}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other request to succeed while the first waits", func() bool {
		st, err := e.q.Status(ctx, free)
		return err == nil && st.State == queue.StateSucceeded
	})
	if st, _ := e.q.Status(ctx, waits); st.State != queue.StateRunning {
		t.Fatalf("waiting request: %+v", st)
	}
	if err := chains.Put(ctx, key, []byte("layer")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the waiting request to succeed", func() bool {
		st, err := e.q.Status(ctx, waits)
		return err == nil && st.State == queue.StateSucceeded && st.Detail == ""
	})
}

// An own write (the event of the fallback-tag index push) is answered but
// not counted as a conversion (issue 9 #7).
func TestIgnoredRequestIsNotAConversion(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	conv := ConverterFunc(func(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
		return &queue.Result{Ignored: "not an image"}, nil
	})
	m, reg := newMetrics()
	startWorker(t, e.q, conv, WithMetrics(m))
	img := "registry.example/app:sha256-" + strings.Repeat("b", 64)
	res, _, err := e.q.SubmitAndWait(ctx, queue.Request{Image: img})
	if err != nil || res.Ignored == "" || len(res.SubjectDigests) != 0 {
		t.Fatalf("result %+v, %v; want ignored", res, err)
	}
	settled(t, e.q)
	if text := metricsText(t, reg); strings.Contains(text, `result="succeeded"`) {
		t.Errorf("an ignored request was counted as a conversion:\n%s", text)
	}
	if st, err := e.q.Status(ctx, img); err != nil || !strings.Contains(st.Detail, "nothing to convert") {
		t.Errorf("status %+v, %v", st, err)
	}
}

// A converter that reports its own stages (convert: plan, pack, push) gets
// them into cimconv_stage_duration_seconds (issue 9 #10).
type stagedConverter struct{ ConverterFunc }

func (stagedConverter) reportsStages() {}

func TestConverterStagesReachMetrics(t *testing.T) {
	e := newEnv(t)
	conv := stagedConverter{func(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
		obs := &reqObserver{stages: stageObserverFrom(ctx)}
		for _, s := range []string{convert.StageResolve, convert.StagePlan, convert.StageBuild, convert.StagePack, convert.StagePush} {
			progress(s)
			obs.Stage(s, time.Millisecond, nil)
		}
		return &queue.Result{}, nil
	}}
	m, reg := newMetrics()
	startWorker(t, e.q, conv, WithMetrics(m))
	if _, _, err := e.q.SubmitAndWait(ctxT(t), queue.Request{Image: "registry.example/app:staged"}); err != nil {
		t.Fatal(err)
	}
	text := metricsText(t, reg)
	for _, s := range []string{"resolve", "plan", "build", "pack", "push", "total"} {
		if !strings.Contains(text, `cimconv_stage_duration_seconds_count{result="ok",stage="`+s+`"}`) {
			t.Errorf("stage %s missing:\n%s", s, text)
		}
	}
	_ = metrics.ResultSucceeded
}

// A worker killed while it holds a build claim: the request is redelivered
// after the ack wait, and the other worker, waiting on the dead holder's
// claim, takes it over once it is stale instead of waiting for its old
// 30-minute lifetime (issue 9 #2).
func TestDeadHoldersClaimIsTakenOver(t *testing.T) {
	e := newEnv(t) // ack wait 1s
	ctx := ctxT(t)
	key := "sha256:" + strings.Repeat("b", 64)
	const ttl = 600 * time.Millisecond

	nc1 := queuetest.Connect(t, e.srv.URL)
	q1, err := queue.Open(ctx, nc1, e.opts...)
	if err != nil {
		t.Fatal(err)
	}
	cc1 := &chainsCache{c: q1.Chains(), worker: "doomed", ttl: ttl, held: map[string]*queue.Claim{}}
	holding := make(chan struct{})
	building := ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		if _, won, err := cc1.Acquire(ctx, key); err != nil || !won {
			t.Errorf("worker 1: won=%v err=%v", won, err)
		}
		close(holding)
		<-ctx.Done() // builds until killed
		return nil, ctx.Err()
	})
	stop1 := startWorker(t, q1, building, WithShutdownGrace(0))
	img := "registry.example/app:orphan"
	if _, err := e.q.Submit(ctx, queue.Request{Image: img}); err != nil {
		t.Fatal(err)
	}
	<-holding
	// kill -9: the connection drops first (no ack, NAK, renewal or release).
	nc1.Close()
	stop1()

	cc2 := &chainsCache{c: e.q.Chains(), worker: "survivor", ttl: ttl, held: map[string]*queue.Claim{}}
	rebuild := ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		_, won, err := cc2.Acquire(ctx, key)
		if err != nil || !won {
			return nil, Transient(fmt.Errorf("worker 2: won=%v err=%v", won, err))
		}
		if err := cc2.Put(ctx, key, []byte("layer")); err != nil {
			return nil, err
		}
		return &queue.Result{SubjectDigests: []string{"sha256:" + strings.Repeat("d", 64)}}, cc2.Release(ctx, key)
	})
	start := time.Now()
	startWorker(t, e.open(t), rebuild, WithName("survivor"))
	waitFor(t, "the request to succeed on worker 2", func() bool {
		st, err := e.q.Status(ctx, img)
		return err == nil && st.State == queue.StateSucceeded
	})
	t.Logf("completed on worker 2 %v after the kill (ack wait 1s, claim ttl %v)", time.Since(start).Round(10*time.Millisecond), ttl)
	if st, _ := e.q.Status(ctx, img); st.Attempts != 2 {
		t.Errorf("succeeded on attempt %d, want 2", st.Attempts)
	}
}
