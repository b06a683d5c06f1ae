package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/queue/queuetest"
)

func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no stream response (no leader)", fmt.Errorf("claim x: %w", jetstream.ErrNoStreamResponse), true},
		{"no responders", nats.ErrNoResponders, true},
		{"request timeout", nats.ErrTimeout, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"cluster not available", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"stream offline", &jetstream.APIError{Code: 500, ErrorCode: 10118}, true},
		{"watcher: legacy API error, no meta leader", fmt.Errorf("waiting: %w", &nats.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}), true},
		{"any 503", &jetstream.APIError{Code: 503, ErrorCode: 10023}, true},
		{"legacy bad request (an answer)", &nats.APIError{Code: 400, ErrorCode: 10003}, false},
		{"last seq per subject not ready", &jetstream.APIError{Code: 503, ErrorCode: 10163}, true},
		{"key exists (an answer)", jetstream.ErrKeyExists, false},
		{"wrong last sequence (an answer)", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
		{"key not found (an answer)", jetstream.ErrKeyNotFound, false},
		{"connection closed (the client is done)", nats.ErrConnectionClosed, false},
		{"cancelled", context.Canceled, false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unavailable(tc.err); got != tc.want {
				t.Errorf("unavailable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRiderRetriesOnlyOutages(t *testing.T) {
	r := rider{bound: 2 * time.Second, log: zaptest.NewLogger(t)}
	ctx := ctxT(t)
	for _, tc := range []struct {
		name      string
		fails     []error // returned by the first tries, then nil
		wantTries int
		wantErr   func(error) bool
	}{
		{"election then success", []error{jetstream.ErrNoStreamResponse, jetstream.ErrNoStreamResponse}, 3, nil},
		{"an answer is returned at once", []error{jetstream.ErrKeyExists}, 1,
			func(err error) bool { return errors.Is(err, jetstream.ErrKeyExists) && !errdefs.IsUnavailable(err) }},
		{"an outage longer than the bound is unavailable", repeat(jetstream.ErrNoStreamResponse, 100), -1,
			func(err error) bool {
				return errdefs.IsUnavailable(err) && errors.Is(err, jetstream.ErrNoStreamResponse)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			err := r.do(ctx, "test", func(context.Context) error {
				tries++
				if tries <= len(tc.fails) {
					return tc.fails[tries-1]
				}
				return nil
			})
			if tc.wantErr == nil && err != nil {
				t.Fatalf("err = %v, want success", err)
			}
			if tc.wantErr != nil && !tc.wantErr(err) {
				t.Fatalf("err = %v: not the error wanted", err)
			}
			if tc.wantTries >= 0 && tries != tc.wantTries {
				t.Errorf("%d tries, want %d", tries, tc.wantTries)
			}
			if tc.wantTries < 0 && (tries < 3 || tries >= 100) {
				t.Errorf("%d tries within a 2 s bound: want several, fewer than the 100 failures", tries)
			}
		})
	}
	t.Run("a try that hangs is cut and retried", func(t *testing.T) {
		tries := 0
		err := r.do(ctx, "test", func(tctx context.Context) error {
			tries++
			if tries == 1 {
				<-tctx.Done() // a request lost in a reconnect
				return tctx.Err()
			}
			return nil
		})
		if err != nil || tries != 2 {
			t.Fatalf("err %v after %d tries, want success on the second", err, tries)
		}
	})
	t.Run("the caller's cancellation ends it", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(200*time.Millisecond, cancel)
		err := r.do(cctx, "test", func(context.Context) error { return jetstream.ErrNoStreamResponse })
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want it to wrap context.Canceled", err)
		}
	})
}

func repeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

// lossyKV applies the first Create and Update but answers as if the
// stream had not (an answer lost in a leader change).
type lossyKV struct {
	jetstream.KeyValue
	lostCreate, lostUpdate atomic.Bool
}

func (k *lossyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := k.KeyValue.Create(ctx, key, value, opts...)
	if err == nil && k.lostCreate.CompareAndSwap(false, true) {
		return 0, jetstream.ErrNoStreamResponse
	}
	return rev, err
}

func (k *lossyKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	rev, err := k.KeyValue.Update(ctx, key, value, last)
	if err == nil && k.lostUpdate.CompareAndSwap(false, true) {
		return 0, jetstream.ErrNoStreamResponse
	}
	return rev, err
}

// A claim write that landed while its answer was lost is still the
// claimant's: its retry must not find "someone else" holding the claim (it
// would wait for itself until the claim went stale), and a renewal retried
// the same way must not declare the claim lost.
func TestClaimWriteWithLostAnswerIsStillOurs(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	inner := q.chains.(*ridingKV)
	lossy := &lossyKV{KeyValue: inner.KeyValue}
	c := &Chains{kv: &ridingKV{KeyValue: lossy, r: inner.r}, log: zaptest.NewLogger(t), now: time.Now, seen: map[string]sighting{}}

	cl, holder, err := c.Claim(ctx, chainID, "worker-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cl == nil {
		t.Fatalf("the claimant found its own claim held by %+v", holder)
	}
	defer cl.Release(ctx)
	if !lossy.lostCreate.Load() {
		t.Fatal("the test did not lose a Create answer")
	}
	if err := cl.Renew(ctx); err != nil {
		t.Fatalf("renewal whose first write landed: %v", err)
	}
	if !lossy.lostUpdate.Load() {
		t.Fatal("the test did not lose an Update answer")
	}
	if err := cl.Renew(ctx); err != nil {
		t.Fatalf("the next renewal (the revision adopted?): %v", err)
	}
	// Another worker still loses to it.
	if other, h, err := c.Claim(ctx, chainID, "worker-b", time.Hour); err != nil || other != nil || h.Worker != "worker-a" {
		t.Fatalf("second claimant: claim %v holder %+v err %v; want worker-a to hold it", other, h, err)
	}
}

// leaderless opens a queue (R3, outage tolerance as given) on an
// in-process 3-node cluster, stops the chains bucket's leader and one more
// member, and returns once the client is on the survivor and the bucket
// answers "no response from stream". restart brings the stopped follower
// back (a quorum again).
func leaderless(t *testing.T, opts ...Option) (q *Queue, restart func()) {
	t.Helper()
	members := queuetest.Cluster(t, 3)
	urls := make([]string, len(members))
	byName := map[string]*queuetest.Server{}
	for i, m := range members {
		urls[i] = m.URL
		byName[m.Name()] = m
	}
	// Right after start the meta leader may still count a member offline
	// ("no suitable peers for placement"): provisioning is idempotent, so
	// try again until it places the R3 stream and buckets (a real failure
	// still ends the test, after 60 s, with the last error).
	nc := queuetest.Connect(t, strings.Join(urls, ","))
	opts = append([]Option{WithAckWait(2 * time.Second), WithReplicas(3), WithLogger(zaptest.NewLogger(t))}, opts...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		if q, err = Open(ctxT(t), nc, opts...); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("provisioning the R3 stream and buckets for 60 s: %v", err)
		}
		t.Logf("provisioning the fresh cluster (will retry): %v", err)
		time.Sleep(250 * time.Millisecond)
	}
	ctx := context.Background()
	info, err := q.js.Stream(ctxT(t), "KV_"+ChainsBucket)
	if err != nil {
		t.Fatal(err)
	}
	leader := byName[info.CachedInfo().Cluster.Leader]
	if leader == nil {
		t.Fatalf("chains bucket leader %q is not a member", info.CachedInfo().Cluster.Leader)
	}
	var rest []*queuetest.Server
	for _, m := range members {
		if m != leader {
			rest = append(rest, m)
		}
	}
	other, survivor := rest[0], rest[1]
	leader.Stop()
	other.Stop()
	// On the survivor, so the claim meets the leaderless stream rather
	// than a request buffered during the client's reconnect.
	waitFor(t, "the client on the surviving member, and the bucket answering \"no response from stream\"", func() bool {
		if !q.nc.IsConnected() || q.nc.ConnectedUrl() != survivor.URL {
			return false
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := q.js.Publish(pctx, "$KV."+ChainsBucket+".probe", nil)
		return errors.Is(err, jetstream.ErrNoStreamResponse)
	})
	return q, other.Start
}

// In a 3-node cluster that loses the leader of the chains bucket and one
// more member, the bucket's stream has no leader: every write answers "no
// response from stream" at once. Before, a conversion that met this failed
// its delivery right away, and a few elections dead-lettered it (the fault
// suite's cluster failover). Now the claim waits for a leader.
func TestClaimWaitsForALeader(t *testing.T) {
	q, restart := leaderless(t)
	// The conversion path's contexts have no deadline: each request gets
	// the client's default timeout.
	ctx := context.Background()
	away := 3 * time.Second
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(away)
		restart()
	}()
	// The restart reports to t: it must end before the test does.
	defer func() { <-restarted }()
	start := time.Now()

	cl, _, err := q.Chains().Claim(ctx, chainID, "worker-a", time.Minute)
	if err != nil {
		t.Fatalf("claim while the chains bucket had no leader (for %v at least): %v", away, err)
	}
	defer cl.Release(ctx)
	if took := time.Since(start); took < away {
		t.Fatalf("claim answered after %v, before a quorum was back (%v): the outage was not exercised", took, away)
	}
	if err := q.UpdateStatus(ctx, pinned, Status{State: StateRunning, Image: pinned}); err != nil {
		t.Fatalf("status write after the election: %v", err)
	}
}

// The tolerance bounds the wait: past it, a leaderless bucket's error is
// ErrUnavailable and says for how long NATS could not answer (the CLIs use a
// short bound, so a person at a terminal is not kept waiting two minutes).
func TestOutageToleranceBoundsTheWait(t *testing.T) {
	q, _ := leaderless(t, WithOutageTolerance(2*time.Second))
	_, _, err := q.Chains().Claim(context.Background(), chainID, "worker-a", time.Minute)
	if err == nil {
		t.Fatal("claim succeeded on a bucket without a leader")
	}
	if !errdefs.IsUnavailable(err) || !errors.Is(err, jetstream.ErrNoStreamResponse) || !strings.Contains(err.Error(), "NATS unavailable for") {
		t.Fatalf("err = %v; want ErrUnavailable wrapping the last answer, saying how long NATS was unavailable", err)
	}
}

// lostAnswer is JetStream whose first publish is stored by the server but
// whose answer is lost (a reconnect between the store and the ack).
type lostAnswer struct {
	jetstream.JetStream
	lost atomic.Int32
}

func (j *lostAnswer) Publish(ctx context.Context, subj string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.Publish(ctx, subj, data, opts...)
	if err == nil && j.lost.Add(1) == 1 {
		return nil, nats.ErrTimeout
	}
	return ack, err
}

// A submit whose first answer was lost finds its own message on the retry
// ("duplicate"): it is queued by this call, so it says so and writes the
// queued status; only a submit that found someone else's message is a
// duplicate. Before: dup=true and no status until a worker started.
func TestSubmitAfterALostAnswerIsNotADuplicate(t *testing.T) {
	q, _ := openQueue(t, WithLogger(zaptest.NewLogger(t)))
	ctx := ctxT(t)
	q.js = &lostAnswer{JetStream: q.js}
	dup, err := q.Submit(ctx, Request{Image: pinned})
	if err != nil {
		t.Fatal(err)
	}
	if dup {
		t.Error("submit whose own first try landed reported a duplicate")
	}
	if n := countOn(t, q, SubjectRequest); n != 1 {
		t.Errorf("%d requests in the stream, want 1", n)
	}
	st, err := q.Status(ctx, pinned)
	if err != nil {
		t.Fatalf("no status after the submit: %v", err)
	}
	if st.State != StateQueued {
		t.Errorf("status %s, want queued", st.State)
	}
	// Someone else's submit of the same image, answered at once, is one.
	if dup, err := q.Submit(ctx, Request{Image: pinned, Source: "other"}); err != nil || !dup {
		t.Errorf("second submit: dup=%v err=%v, want a duplicate", dup, err)
	}
}
