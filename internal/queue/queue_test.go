package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/queue/queuetest"
)

const pinned = "registry.example/win/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// openQueue provisions a queue on a fresh embedded server.
func openQueue(t *testing.T, opts ...Option) (*Queue, *queuetest.Server) {
	t.Helper()
	srv := queuetest.Embedded(t)
	return openOn(t, srv.URL, opts...), srv
}

// openOn provisions a queue on its own connection to url.
func openOn(t *testing.T, url string, opts ...Option) *Queue {
	t.Helper()
	q, err := Open(context.Background(), queuetest.Connect(t, url), append([]Option{WithAckWait(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// servers runs f against the embedded server (the version in go.mod) and
// against a separate nats-server process from PATH (Debian's 2.9, the
// oldest supported; skipped without one unless CI is set).
func servers(t *testing.T, f func(t *testing.T, srv *queuetest.Server)) {
	t.Run("embedded", func(t *testing.T) { f(t, queuetest.Embedded(t)) })
	t.Run("system-nats-server", func(t *testing.T) {
		srv := queuetest.System(t)
		t.Logf("nats-server %s", srv.Version)
		f(t, srv)
	})
}

func ctxT(t *testing.T) context.Context { return queuetest.Context(t, 60*time.Second) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	queuetest.WaitFor(t, what, cond)
}

func countOn(t *testing.T, q *Queue, subject string) uint64 {
	t.Helper()
	info, err := q.stream.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestProvisionIsIdempotent(t *testing.T) {
	nc := queuetest.Connect(t, queuetest.Embedded(t).URL)
	ctx := ctxT(t)
	q1, err := Open(ctx, nc, WithMaxDeliver(3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q1.Submit(ctx, Request{Image: pinned}); err != nil {
		t.Fatal(err)
	}
	q2, err := Open(ctx, nc, WithMaxDeliver(3))
	if err != nil {
		t.Fatalf("second provisioning: %v", err)
	}
	if n := countOn(t, q2, SubjectRequest); n != 1 {
		t.Errorf("re-provisioning lost messages: %d requests, want 1", n)
	}
	ci, err := q2.cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.Config.MaxDeliver != 3 || ci.NumPending != 1 {
		t.Errorf("consumer MaxDeliver=%d pending=%d, want 3 and 1", ci.Config.MaxDeliver, ci.NumPending)
	}
	// Changed settings are applied to the existing objects.
	q3, err := Open(ctx, nc, WithMaxDeliver(7), WithDuplicateWindow(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	ci, _ = q3.cons.Info(ctx)
	si, _ := q3.stream.Info(ctx)
	if ci.Config.MaxDeliver != 7 || si.Config.Duplicates != time.Minute {
		t.Errorf("update not applied: MaxDeliver=%d Duplicates=%v", ci.Config.MaxDeliver, si.Config.Duplicates)
	}
}

func TestProvisionExistingStream(t *testing.T) {
	tests := []struct {
		name    string
		cfg     jetstream.StreamConfig
		wantErr error
	}{
		{"other subjects and limits are updated", jetstream.StreamConfig{
			Name: StreamName, Subjects: []string{SubjectRequest, "legacy.>"}, Storage: jetstream.FileStorage, MaxAge: time.Hour,
		}, nil},
		{"memory storage is refused", jetstream.StreamConfig{
			Name: StreamName, Subjects: []string{SubjectRequest}, Storage: jetstream.MemoryStorage,
		}, ErrStreamMismatch},
		{"work-queue retention is refused", jetstream.StreamConfig{
			Name: StreamName, Subjects: []string{SubjectRequest}, Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy,
		}, ErrStreamMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := queuetest.Connect(t, queuetest.Embedded(t).URL)
			ctx := ctxT(t)
			js, _ := jetstream.New(nc)
			if _, err := js.CreateStream(ctx, tt.cfg); err != nil {
				t.Fatal(err)
			}
			q, err := Open(ctx, nc)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), StreamName) {
					t.Fatalf("err = %v, want %v naming the stream", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			si, _ := q.stream.Info(ctx)
			if len(si.Config.Subjects) != 3 || si.Config.MaxAge != 14*24*time.Hour {
				t.Errorf("stream not updated: subjects %v maxAge %v", si.Config.Subjects, si.Config.MaxAge)
			}
		})
	}
}

func TestBindWithoutProvisioning(t *testing.T) {
	nc := queuetest.Connect(t, queuetest.Embedded(t).URL)
	ctx := ctxT(t)
	if _, err := Open(ctx, nc, WithProvision(false)); err == nil || !strings.Contains(err.Error(), StreamName) {
		t.Fatalf("binding to a missing stream: err = %v, want an error naming %s", err, StreamName)
	}
	if _, err := Open(ctx, nc); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, nc, WithProvision(false)); err != nil {
		t.Fatalf("binding to a provisioned stream: %v", err)
	}
}

func TestDuplicateSubmitCollapses(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	submits := []struct {
		req     Request
		wantDup bool
	}{
		{Request{Image: pinned, Source: "webhook/distribution"}, false},
		{Request{Image: pinned, Source: "webhook/harbor", Requester: "someone"}, true},
		// Same digest, tag added: the same image.
		{Request{Image: strings.Replace(pinned, "app@", "app:v1@", 1)}, true},
		{Request{Image: pinned, Platform: "windows/amd64", Builder: "auto"}, true},
		{Request{Image: pinned, OSVersion: "10.0.26100"}, false},
		{Request{Image: pinned, Force: true}, false},
	}
	for i, s := range submits {
		dup, err := q.Submit(ctx, s.req)
		if err != nil {
			t.Fatal(err)
		}
		if dup != s.wantDup {
			t.Errorf("submit %d (%+v): dup=%v, want %v", i, s.req, dup, s.wantDup)
		}
	}
	if n := countOn(t, q, SubjectRequest); n != 3 {
		t.Errorf("%d requests in the stream, want 3", n)
	}
	st, err := q.Status(ctx, pinned)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateQueued {
		t.Errorf("status %s, want queued", st.State)
	}
}

func TestSubmitRejectsBadRequest(t *testing.T) {
	q, _ := openQueue(t)
	_, err := q.Submit(ctxT(t), Request{Image: "UPPER/Case::bad"})
	if !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("err = %v, want ErrInvalidRequest", err)
	}
	if n := countOn(t, q, SubjectRequest); n != 0 {
		t.Errorf("an invalid request was queued")
	}
}

// consumeUntil runs Consume with h until stop is closed.
func consumeUntil(t *testing.T, q *Queue, h Handler, opts ...ConsumeOption) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := q.Consume(ctx, h, append([]ConsumeOption{WithFetchWait(200 * time.Millisecond)}, opts...)...); err != nil {
			t.Error(err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func TestTermDeadLettersAndReplayRequeues(t *testing.T) {
	servers(t, testTermDeadLettersAndReplayRequeues)
}

func testTermDeadLettersAndReplayRequeues(t *testing.T, srv *queuetest.Server) {
	q := openOn(t, srv.URL)
	ctx := ctxT(t)
	var seen atomic.Int32
	var mu sync.Mutex
	var attempts []int
	stop := consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
		mu.Lock()
		attempts = append(attempts, d.Attempt)
		mu.Unlock()
		if seen.Add(1) == 1 {
			if err := d.Term(ctx, "permanent", errors.New("manifest is not Windows")); err != nil {
				t.Error(err)
			}
			return
		}
		if err := d.Ack(ctx); err != nil {
			t.Error(err)
		}
	})
	defer stop()
	if _, err := q.Submit(ctx, Request{Image: pinned}); err != nil {
		t.Fatal(err)
	}
	var dead []DeadLetter
	waitFor(t, "dead letter", func() bool { dead, _ = q.Dead(ctx); return len(dead) == 1 })
	// The server must honour the Term: nothing left pending, no redelivery
	// (nats-server 2.9 ignores TermWithReason and redelivers after the ack
	// wait, which the handler above would count and acknowledge).
	waitFor(t, "the terminated request to leave the consumer", func() bool {
		ci, err := q.cons.Info(ctx)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	})
	if n := seen.Load(); n != 1 {
		t.Fatalf("the terminated request was delivered %d times, want 1", n)
	}
	d := dead[0]
	if d.Reason != "permanent" || d.Error != "manifest is not Windows" || d.Request == nil || d.Request.Image != pinned {
		t.Errorf("dead letter %+v", d)
	}
	st, err := q.Status(ctx, pinned)
	if err != nil || st.State != StateDead || st.LastError != "manifest is not Windows" {
		t.Errorf("status %+v, %v; want dead with the error", st, err)
	}
	if err := q.Replay(ctx, d.Seq); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replayed request handled", func() bool { return seen.Load() == 2 })
	if dead, _ := q.Dead(ctx); len(dead) != 0 {
		t.Errorf("dead letter still listed after replay: %+v", dead)
	}
	if err := q.Replay(ctx, d.Seq); !errors.Is(err, ErrNotFound) {
		t.Errorf("second replay: err = %v, want ErrNotFound", err)
	}
	if err := q.Replay(ctx, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("replaying a request (not a dead letter): err = %v, want ErrNotFound", err)
	}
}

func TestPoisonMessageIsDeadLettered(t *testing.T) {
	servers(t, func(t *testing.T, srv *queuetest.Server) {
		testPoisonMessageIsDeadLettered(t, openOn(t, srv.URL))
	})
}

func testPoisonMessageIsDeadLettered(t *testing.T, q *Queue) {
	ctx := ctxT(t)
	if _, err := q.js.Publish(ctx, SubjectRequest, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	var parseErrs atomic.Int32
	consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
		if d.ParseError == nil {
			t.Errorf("garbage parsed as %+v", d.Request)
			_ = d.Ack(ctx)
			return
		}
		parseErrs.Add(1)
		if err := d.Term(ctx, "unparseable", d.ParseError); err != nil {
			t.Error(err)
		}
	})
	var dead []DeadLetter
	waitFor(t, "poison dead letter", func() bool { dead, _ = q.Dead(ctx); return len(dead) == 1 })
	if string(dead[0].Raw) != "{not json" || dead[0].Request != nil || !strings.Contains(dead[0].Error, "invalid request") {
		t.Errorf("dead letter %+v", dead[0])
	}
	n, err := q.ReplayAll(ctx)
	if err != nil || n != 1 {
		t.Fatalf("ReplayAll = %d, %v", n, err)
	}
	waitFor(t, "poison redelivered after replay", func() bool { return parseErrs.Load() == 2 })
}

func TestUnsettledDeliveryIsRedelivered(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	var mu sync.Mutex
	var attempts []int
	consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
		mu.Lock()
		attempts = append(attempts, d.Attempt)
		n := len(attempts)
		mu.Unlock()
		if n == 2 {
			_ = d.Ack(ctx)
		}
		// First delivery: return without settling; Consume must NAK it.
	})
	if _, err := q.Submit(ctx, Request{Image: pinned}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(attempts) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if attempts[0] != 1 || attempts[1] != 2 {
		t.Errorf("attempts %v, want [1 2]", attempts)
	}
}

func TestMaxDeliveriesAdvisoryDeadLetters(t *testing.T) {
	servers(t, func(t *testing.T, srv *queuetest.Server) {
		testMaxDeliveriesAdvisoryDeadLetters(t, openOn(t, srv.URL, WithMaxDeliver(2)))
	})
}

func testMaxDeliveriesAdvisoryDeadLetters(t *testing.T, q *Queue) {
	ctx := ctxT(t)
	var deliveries atomic.Int32
	consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
		deliveries.Add(1)
		_ = d.Nak(0) // a worker that never gives up by itself
	})
	if _, err := q.Submit(ctx, Request{Image: pinned}); err != nil {
		t.Fatal(err)
	}
	var dead []DeadLetter
	waitFor(t, "max-deliver dead letter", func() bool { dead, _ = q.Dead(ctx); return len(dead) == 1 })
	if dead[0].Reason != "max_deliver" || dead[0].Request == nil {
		t.Errorf("dead letter %+v", dead[0])
	}
	if n := deliveries.Load(); n != 2 {
		t.Errorf("%d deliveries, want 2", n)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	var cur, peak, done atomic.Int32
	consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		// Hold the slot until the limit was reached once, so the test
		// does not depend on how fast the pulls are.
		for deadline := time.Now().Add(5 * time.Second); peak.Load() < 3 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
		cur.Add(-1)
		_ = d.Ack(ctx)
		done.Add(1)
	}, WithConcurrency(3))
	for i := range 12 {
		if _, err := q.Submit(ctx, Request{Image: "registry.example/app:" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all handled", func() bool { return done.Load() == 12 })
	if p := peak.Load(); p != 3 {
		t.Errorf("peak concurrency %d, want 3", p)
	}
}

func TestSubmitAndWait(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
		res := &Result{Request: d.Request, Attempts: d.Attempt, SubjectDigests: []string{"sha256:aa"}}
		if strings.Contains(d.Request.Image, "broken") {
			res.Error, res.Reason = "no Windows manifest", "permanent"
		}
		if err := q.PublishResult(ctx, res); err != nil {
			t.Error(err)
		}
		_ = d.Ack(ctx)
	})
	res, dup, err := q.SubmitAndWait(ctx, Request{Image: "registry.example/app:good"})
	if err != nil || dup || !res.Succeeded() || res.SubjectDigests[0] != "sha256:aa" {
		t.Fatalf("good: %+v dup=%v err=%v", res, dup, err)
	}
	res, _, err = q.SubmitAndWait(ctx, Request{Image: "registry.example/app:broken"})
	if err != nil || res.Succeeded() || res.Reason != "permanent" {
		t.Fatalf("broken: %+v err=%v", res, err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	// A duplicate of a request whose result is long gone and whose status
	// is not final waits until the deadline.
	if err := q.UpdateStatus(ctx, "registry.example/app:never", Status{State: StateRunning, Key: "x", Seq: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	w, err := q.WatchResult(short, "nobody-publishes-this")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Wait(short, Request{Image: "registry.example/app:never"}, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
}

func TestDuplicateOfFinishedRequestReturnsItsStatus(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	req := Request{Image: pinned}
	if _, err := q.Submit(ctx, req); err != nil {
		t.Fatal(err)
	}
	st, _ := q.Status(ctx, pinned)
	if err := q.UpdateStatus(ctx, pinned, Status{State: StateSucceeded, Key: st.Key, Seq: st.Seq, Artifacts: []string{"sha256:bb"}}); err != nil {
		t.Fatal(err)
	}
	res, dup, err := q.SubmitAndWait(ctx, req)
	if err != nil || !dup || !res.Succeeded() || len(res.ArtifactDigests) != 1 {
		t.Fatalf("res %+v dup=%v err=%v, want the finished status at once", res, dup, err)
	}
}

// A duplicate of a finished request is answered from that request's result
// event, whatever the image's status says now: a newer request for the same
// image (other options, or a webhook's digest-pinned request recorded under
// repo:tag too) replaced the status, whose key is no longer the duplicate's.
// Before, submit --wait of such a duplicate waited until its timeout (forever
// with --timeout 0): the watch only sees results published after it starts,
// and the status answered only for its own key.
func TestDuplicateOfFinishedRequestAnswersFromItsResult(t *testing.T) {
	const image = "registry.example/win/app:t"
	newer := []struct {
		name string
		req  Request
	}{
		{"other options", Request{Image: image, OSVersion: "10.0.20348"}},
		{"webhook's digest-pinned request", Request{Image: pinned, Tag: "t", Source: "webhook/distribution"}},
	}
	for _, tc := range newer {
		t.Run("status taken over by "+tc.name, func(t *testing.T) {
			q, _ := openQueue(t)
			ctx := ctxT(t)
			req := Request{Image: image}
			if _, err := q.Submit(ctx, req); err != nil {
				t.Fatal(err)
			}
			// The worker's order: the final status, then the result.
			st, _ := q.Status(ctx, image)
			if err := q.UpdateStatus(ctx, image, Status{State: StateSucceeded, Image: image, Key: st.Key, Seq: st.Seq, Artifacts: []string{"sha256:bb"}}); err != nil {
				t.Fatal(err)
			}
			if err := q.PublishResult(ctx, &Result{Request: req, ArtifactDigests: []string{"sha256:bb"}, Attempts: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := q.Submit(ctx, tc.req); err != nil {
				t.Fatal(err)
			}
			if now, _ := q.Status(ctx, image); now.Key == st.Key {
				t.Fatalf("the newer request did not take over the status: %+v", now)
			}
			short, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			res, dup, err := q.SubmitAndWait(short, req)
			if err != nil || !dup || !res.Succeeded() || len(res.ArtifactDigests) != 1 || res.ArtifactDigests[0] != "sha256:bb" {
				t.Fatalf("res %+v dup=%v err=%v, want the finished request's result at once", res, dup, err)
			}
		})
	}
	t.Run("duplicate of a running request waits for its result", func(t *testing.T) {
		q, _ := openQueue(t)
		ctx := ctxT(t)
		req := Request{Image: image}
		if _, err := q.Submit(ctx, req); err != nil {
			t.Fatal(err)
		}
		type answer struct {
			res *Result
			err error
		}
		got := make(chan answer, 1)
		go func() {
			res, _, err := q.SubmitAndWait(ctx, req)
			got <- answer{res, err}
		}()
		select {
		case a := <-got:
			t.Fatalf("answered %+v (err %v) before the request finished", a.res, a.err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := q.PublishResult(ctx, &Result{Request: req, ArtifactDigests: []string{"sha256:cc"}}); err != nil {
			t.Fatal(err)
		}
		if a := <-got; a.err != nil || len(a.res.ArtifactDigests) != 1 || a.res.ArtifactDigests[0] != "sha256:cc" {
			t.Fatalf("res %+v err %v, want the result published meanwhile", a.res, a.err)
		}
	})
	t.Run("a result older than the request is not its answer", func(t *testing.T) {
		q, _ := openQueue(t)
		ctx := ctxT(t)
		req := Request{Image: image}
		// Left by a request with the same key from before the duplicate
		// window (the stream keeps results for its max age).
		if err := q.PublishResult(ctx, &Result{Request: req, Error: "an old failure", Reason: "permanent"}); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Submit(ctx, req); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if res, dup, err := q.SubmitAndWait(short, req); !dup || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("res %+v dup=%v err=%v, want a wait for the pending request's result", res, dup, err)
		}
	})
}

func TestStatusNeverRegresses(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	steps := []struct {
		st   Status
		want State
	}{
		{Status{State: StateQueued, Key: "k", Seq: 5}, StateQueued},
		{Status{State: StateRunning, Key: "k", Seq: 5, Attempts: 1}, StateRunning},
		// submit's queued landing after the worker's running (issue 9 #5)
		{Status{State: StateQueued, Key: "k", Seq: 5}, StateRunning},
		{Status{State: StateFailed, Key: "k", Seq: 5, Attempts: 1}, StateFailed},
		{Status{State: StateRunning, Key: "k", Seq: 5, Attempts: 2}, StateRunning}, // the retry
		{Status{State: StateFailed, Key: "k", Seq: 5, Attempts: 1}, StateRunning},  // late, from attempt 1
		{Status{State: StateQueued, Key: "k", Seq: 5, Attempts: 2}, StateQueued},   // handed back on shutdown
		{Status{State: StateRunning, Key: "k", Seq: 5, Attempts: 2}, StateQueued},  // late running of that attempt
		{Status{State: StateSucceeded, Key: "k", Seq: 5, Attempts: 3}, StateSucceeded},
		{Status{State: StateQueued, Key: "k", Seq: 5}, StateSucceeded}, // late queued
		// the final state of an older attempt, landing late (its delivery
		// was redelivered while it waited out a NATS election)
		{Status{State: StateDead, Key: "k", Seq: 5, Attempts: 2}, StateSucceeded},
		{Status{State: StateRunning, Key: "k", Seq: 5, Attempts: 4}, StateSucceeded},
		{Status{State: StateRunning, Key: "old", Seq: 3}, StateSucceeded},
		{Status{State: StateQueued, Key: "k2", Seq: 9}, StateQueued}, // newer request
		{Status{State: StateRunning, Key: "k2", Seq: 9, Attempts: 1}, StateRunning},
		// redelivered during a NATS election while attempt 1 still runs;
		// attempt 2 fails first ("will retry") ...
		{Status{State: StateRunning, Key: "k2", Seq: 9, Attempts: 2}, StateRunning},
		{Status{State: StateFailed, Key: "k2", Seq: 9, Attempts: 2}, StateFailed},
		// ... then attempt 1 succeeds and its ack ends the request: no
		// attempt 3 will come, so its success must show
		{Status{State: StateSucceeded, Key: "k2", Seq: 9, Attempts: 1}, StateSucceeded},
		{Status{State: StateFailed, Key: "k2", Seq: 9, Attempts: 2}, StateSucceeded}, // late
		// attempt 2, on its last delivery, dead-letters after that: the
		// artifact exists, the success stays
		{Status{State: StateDead, Key: "k2", Seq: 9, Attempts: 2}, StateSucceeded},
		// the other order: attempt 2, on its last delivery, dead-letters
		// while attempt 1 still runs; attempt 1 then succeeds: the
		// artifact exists, so the success shows
		{Status{State: StateRunning, Key: "k3", Seq: 11, Attempts: 1}, StateRunning},
		{Status{State: StateDead, Key: "k3", Seq: 11, Attempts: 2}, StateDead},
		{Status{State: StateSucceeded, Key: "k3", Seq: 11, Attempts: 1}, StateSucceeded},
	}
	for i, s := range steps {
		if err := q.UpdateStatus(ctx, pinned, s.st); err != nil {
			t.Fatal(err)
		}
		got, err := q.Status(ctx, "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
		if err != nil {
			t.Fatal(err)
		}
		if got.State != s.want {
			t.Errorf("step %d: state %s, want %s", i, got.State, s.want)
		}
	}
	if _, err := q.Status(ctx, "registry.example/other:1"); !errors.Is(err, ErrNotFound) || !errdefs.IsNotFound(err) {
		t.Errorf("unknown image: err = %v, want ErrNotFound of kind errdefs.ErrNotFound", err)
	}
}

func TestServerRestartLosesNothing(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t)
	srv, err := StartEmbedded(ctx, dir, WithPort(0))
	if err != nil {
		t.Fatal(err)
	}
	port := srv.Port()
	nc, err := Connect(ctx, srv.ClientURL(), WithReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := Open(ctx, nc, WithAckWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	handled := map[string]bool{}
	consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
		if err := d.Ack(ctx); err != nil {
			return // redelivered later
		}
		mu.Lock()
		handled[d.Request.Image] = true
		mu.Unlock()
	})
	submit := func(tag string) {
		for {
			if _, err := q.Submit(ctx, Request{Image: "registry.example/app:" + tag}); err == nil {
				return
			} else if ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, tag := range []string{"a", "b", "c"} {
		submit(tag)
	}
	srv.Shutdown()
	srv, err = StartEmbedded(ctx, dir, WithPort(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	for _, tag := range []string{"d", "e"} {
		submit(tag)
	}
	waitFor(t, "all five handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == 5 })
}

func TestEmbeddedPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = StartEmbedded(ctxT(t), t.TempDir(), WithPort(port))
	if err == nil || !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("err = %v, want an error naming port %d", err, port)
	}
}

// TestSuccessBetweenDeadStatusAndDeadLetter: another delivery of the request
// succeeds after this one wrote the dead status but before it stored the
// dead letter. The success's own clean-up finds no dead letter yet; the
// dead-lettering side must find the success and remove its dead letter, or
// operators see a false one (and an alert) for a converted image. The
// control case, a success of another request, keeps the dead letter.
func TestSuccessBetweenDeadStatusAndDeadLetter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sameSeq  bool
		wantDead int
	}{
		{"success of the same request", true, 0},
		{"control: the status of an older request", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := openQueue(t)
			ctx := ctxT(t)
			var injected atomic.Bool
			var term = make(chan error, 1)
			consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
				q.afterDeadStatus = func() {
					seq := d.Seq
					if !tc.sameSeq {
						seq-- // not this request
					}
					err := q.UpdateStatus(ctx, d.Request.Image, Status{State: StateSucceeded, Image: d.Request.Image,
						Key: d.Key(), Seq: seq, Attempts: d.Attempt + 1})
					injected.Store(err == nil)
				}
				term <- d.Term(ctx, "max_deliver", errors.New("registry timed out"))
			})
			if _, err := q.Submit(ctx, Request{Image: pinned}); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-term:
				if err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatal("no delivery")
			}
			if !injected.Load() {
				t.Fatal("the success was not written between the dead status and the dead letter")
			}
			dead, err := q.Dead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(dead) != tc.wantDead {
				t.Fatalf("%d dead letters after Term, want %d", len(dead), tc.wantDead)
			}
		})
	}
}

// A request whose last delivery reaches a worker's outstanding pull while
// that worker shuts down is requeued (handBack), not NAKed: a NAK would use
// up its last delivery, and it would be dead-lettered as max_deliver
// without any worker trying it.
func TestShutdownRequeuesARequestOnItsLastDelivery(t *testing.T) {
	srv := func() string { _, s := openQueue(t, WithMaxDeliver(2)); return s.URL }()
	qA := openOn(t, srv, WithMaxDeliver(2))
	qB := openOn(t, srv, WithMaxDeliver(2))
	ctx := ctxT(t)

	// Worker A: attempt 1 fails transiently (NAK with a delay), then A
	// shuts down while its next pull is outstanding; attempt 2 (the last)
	// arrives into that pull.
	var handledA atomic.Int32
	nakked := make(chan struct{})
	actx, cancelA := context.WithCancel(context.Background())
	doneA := make(chan struct{})
	go func() {
		defer close(doneA)
		_ = qA.Consume(actx, func(ctx context.Context, d *Delivery) {
			handledA.Add(1)
			_ = d.Nak(1500 * time.Millisecond)
			close(nakked)
		}, WithConcurrency(1), WithFetchWait(5*time.Second))
	}()
	if _, err := qA.Submit(ctx, Request{Image: pinned}); err != nil {
		t.Fatal(err)
	}
	<-nakked
	time.Sleep(300 * time.Millisecond) // A is in its next 5s pull
	cancelA()                          // shutdown starts
	<-doneA

	// Worker B starts (a rolling update): the request should still be
	// converted somewhere.
	var handledB atomic.Int32
	consumeUntil(t, qB, func(ctx context.Context, d *Delivery) {
		handledB.Add(1)
		_ = d.Ack(ctx)
	})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && handledB.Load() == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	dead, _ := qB.Dead(ctx)
	if handledB.Load() == 0 {
		var reasons []string
		for _, d := range dead {
			reasons = append(reasons, d.Reason+": "+d.Error)
		}
		t.Fatalf("request handled %d time(s) in all (attempt 2 never reached a handler); dead letters: %q", handledA.Load()+handledB.Load(), reasons)
	}
}

// Term writes the dead status first, then publishes the dead
// letter. When the publish fails (here: the settle context ends in between,
// as under a NATS outage), Term NAKs and the request is retried: the dead
// status, final, which no later attempt's running or failed can replace,
// must be taken back, and the dead letter too if its publication landed
// though unconfirmed.
func TestFailedDeadLetterTakesBackTheDeadStatus(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	termErr := make(chan error, 1)
	again, release := make(chan *Delivery, 1), make(chan struct{})
	consumeUntil(t, q, func(hctx context.Context, d *Delivery) {
		if d.Attempt > 1 {
			again <- d
			<-release // alive, being converted, while the test looks
			_ = d.Ack(hctx)
			return
		}
		sctx, cancel := context.WithCancel(hctx)
		q.afterDeadStatus = cancel // the settle deadline runs out here
		termErr <- d.Term(sctx, "permanent", errors.New("not a windows image"))
	})
	defer close(release)
	if _, err := q.Submit(ctx, Request{Image: pinned}); err != nil {
		t.Fatal(err)
	}
	if err := <-termErr; err == nil {
		t.Fatal("Term succeeded; the scenario needs a failed dead letter")
	}
	d := <-again
	dead, err := q.Dead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := q.Status(ctx, pinned)
	if err != nil {
		t.Fatal(err)
	}
	if st.State.Final() {
		t.Errorf("status is %q (final) while attempt %d of the request runs: Term failed and NAKed it", st.State, d.Attempt)
	}
	if len(dead) != 0 {
		t.Errorf("%d dead letter(s) stored for a request Term handed back", len(dead))
	}
}

// A process that consumes is ready only while the request consumer exists;
// one that only submits (the webhook receiver) does not need it.
func TestReadyToConsumeNeedsTheConsumer(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	if err := q.ReadyToConsume(ctx); err != nil {
		t.Fatalf("ReadyToConsume with the consumer provisioned: %v", err)
	}
	if err := q.js.DeleteConsumer(ctx, StreamName, ConsumerName); err != nil {
		t.Fatal(err)
	}
	if err := q.Ready(ctx); err != nil {
		t.Errorf("Ready without the consumer: %v, want ready (submitting needs only the stream)", err)
	}
	if err := q.ReadyToConsume(ctx); !errors.Is(err, jetstream.ErrConsumerNotFound) || !strings.Contains(err.Error(), ConsumerName) {
		t.Errorf("ReadyToConsume without the consumer: %v, want consumer not found", err)
	}
}

// Workers whose request consumer was deleted (`nats consumer rm`) re-create
// it and go on converting; two workers finding it gone at once agree on one.
// Before, every pull failed ("pull failed; retrying") until a restart.
func TestConsumeRecreatesADeletedConsumer(t *testing.T) {
	srv := queuetest.Embedded(t)
	core, logs := observer.New(zapcore.InfoLevel)
	workers := []*Queue{
		openOn(t, srv.URL, WithLogger(zap.New(core).Named("w1"))),
		openOn(t, srv.URL, WithLogger(zap.New(core).Named("w2"))),
	}
	handled := make(chan string, 16)
	for _, q := range workers {
		consumeUntil(t, q, func(ctx context.Context, d *Delivery) {
			_ = d.Ack(ctx)
			handled <- d.Request.Image
		})
	}
	ctx := ctxT(t)
	waitHandled := func(image string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case got := <-handled:
				if got == image {
					return
				}
			case <-timeout:
				t.Fatalf("%s not handled within 20s; logs:\n%s", image, logText(logs))
			}
		}
	}
	if _, err := workers[0].Submit(ctx, Request{Image: "registry.example/app:before"}); err != nil {
		t.Fatal(err)
	}
	waitHandled("registry.example/app:before")

	if err := workers[0].js.DeleteConsumer(ctx, StreamName, ConsumerName); err != nil {
		t.Fatal(err)
	}
	if _, err := workers[0].Submit(ctx, Request{Image: "registry.example/app:after"}); err != nil {
		t.Fatal(err)
	}
	waitHandled("registry.example/app:after")
	if n := logs.FilterMessageSnippet("re-created it").Len(); n == 0 {
		t.Errorf("no log line says the consumer was re-created; logs:\n%s", logText(logs))
	}
	if n := logs.FilterMessageSnippet("could not be re-created").Len(); n != 0 {
		t.Errorf("%d failed re-creations; logs:\n%s", n, logText(logs))
	}
	for _, q := range workers {
		if err := q.ReadyToConsume(ctx); err != nil {
			t.Errorf("ReadyToConsume after the re-creation: %v", err)
		}
	}
	info, err := workers[0].cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Config, workers[0].consumerConfig(); got.AckWait != want.AckWait || got.MaxDeliver != want.MaxDeliver || got.FilterSubject != want.FilterSubject || got.MaxWaiting != want.MaxWaiting {
		t.Errorf("re-created consumer config %+v, want the provisioned one %+v", got, want)
	}
}

func logText(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "%s %s %v\n", e.LoggerName, e.Message, e.ContextMap())
	}
	return b.String()
}
