//go:build fault && linux

package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/testport"
)

// knobs are the service timeouts the suite shortens so that a throttled
// conversion of a few MB outlasts each of them several times.
type knobs struct {
	ackWait       time.Duration
	claimTTL      time.Duration
	settleTimeout time.Duration
	maxDeliver    int
}

var defaultKnobs = knobs{ackWait: 4 * time.Second, claimTTL: 3 * time.Second, settleTimeout: 3 * time.Second, maxDeliver: 5}

// Service defaults for knobs an older converter does not have: the settle
// deadline was a fixed 15 s from the start of the handler.
const legacySettle = 15 * time.Second

// longest is the longest internal timeout of a worker started with k: a
// conversion must take several times this to expose a timeout that starts
// too early. A knob the binary lacks counts with its built-in value.
func (k knobs) longest(t *testing.T) time.Duration {
	l := k.ackWait
	if serveFlags["claim-ttl"] {
		l = max(l, k.claimTTL)
	}
	if serveFlags["settle-timeout"] {
		l = max(l, k.settleTimeout)
	} else {
		l = max(l, legacySettle)
	}
	return l
}

// describe names the knobs as passed, and those the binary lacks.
func (k knobs) describe() string {
	s := fmt.Sprintf("ack-wait=%v max-deliver=%d", k.ackWait, k.maxDeliver)
	for _, f := range []struct {
		flag string
		v    time.Duration
	}{{"claim-ttl", k.claimTTL}, {"settle-timeout", k.settleTimeout}} {
		if serveFlags[f.flag] {
			s += fmt.Sprintf(" %s=%v", f.flag, f.v)
		} else {
			s += fmt.Sprintf(" %s=(not a flag of this converter)", f.flag)
		}
	}
	return s
}

// env is one scenario's world: logs, the registry, the NATS URL and the
// processes to check at the end.
type env struct {
	t        *testing.T
	logs     string
	natsURL  string
	replicas int
	registry string
	knobs    knobs
	procs    []*proc
}

func (e *env) workerArgs(listen int, dataDir string) []string {
	k := e.knobs
	args := []string{"serve", "--role=worker", "--nats-url", e.natsURL,
		"--listen", fmt.Sprintf("127.0.0.1:%d", listen), "--data-dir", dataDir,
		"--builder", "portable", "--concurrency", "2",
		"--ack-wait", k.ackWait.String(), "--max-deliver", fmt.Sprint(k.maxDeliver),
		"--retry-backoff", "1s", "--shutdown-grace", "2s",
		"--insecure-registry", e.registry,
		"--nats-replicas", fmt.Sprint(max(e.replicas, 1)),
	}
	if serveFlags["claim-ttl"] {
		args = append(args, "--claim-ttl", k.claimTTL.String())
	}
	if serveFlags["settle-timeout"] {
		args = append(args, "--settle-timeout", k.settleTimeout.String())
	}
	if serveFlags["allowed-registries"] {
		args = append(args, "--allowed-registries", e.registry)
	} else if serveFlags["allow-local-registries"] {
		args = append(args, "--allow-local-registries")
	}
	return args
}

// startWorker starts `converter serve --role=worker` and waits for /readyz.
func (e *env) startWorker(nameStr string) *proc {
	e.t.Helper()
	port := testport.Port(e.t)
	p := newProc(e.t, e.logs, nameStr, converterBin, e.workerArgs(port, filepath.Join(e.t.TempDir(), "data"))...)
	p.start()
	e.procs = append(e.procs, p)
	if !waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/readyz", port), 60*time.Second) {
		e.t.Fatalf("%s not ready within 60 s:\n%s", nameStr, p.tail(30))
	}
	return p
}

// restart starts a killed process again (same flags, same data dir) and,
// for a serve process, waits for /readyz.
func (e *env) restart(p *proc) {
	e.t.Helper()
	p.start()
	for i, a := range p.args {
		if a == "--listen" && i+1 < len(p.args) {
			if !waitHTTP("http://"+p.args[i+1]+"/readyz", 60*time.Second) {
				e.t.Fatalf("%s not ready within 60 s after restart:\n%s", p.name, p.tail(30))
			}
		}
	}
}

// startWebhook starts `converter serve --role=webhook` accepting
// distribution notifications for the registry with a bearer token on port.
func (e *env) startWebhook(nameStr, token string, port int) *proc {
	e.t.Helper()
	tokenFile := filepath.Join(e.t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		e.t.Fatal(err)
	}
	p := newProc(e.t, e.logs, nameStr, converterBin, "serve", "--role=webhook", "--nats-url", e.natsURL,
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", e.t.TempDir(),
		"--webhook-token-file", tokenFile, "--webhook-allowed-registries", e.registry,
		"--ack-wait", e.knobs.ackWait.String(), "--max-deliver", fmt.Sprint(e.knobs.maxDeliver),
		"--nats-replicas", fmt.Sprint(max(e.replicas, 1)))
	p.start()
	e.procs = append(e.procs, p)
	if !waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/readyz", port), 60*time.Second) {
		e.t.Fatalf("%s not ready within 60 s:\n%s", nameStr, p.tail(30))
	}
	return p
}

// checkProcs fails the test for any process crash or crash marker.
func (e *env) checkProcs() {
	e.t.Helper()
	for _, p := range e.procs {
		p.check()
	}
}

// recorder watches the status bucket and keeps every value each key took,
// in order: the status history the monotonicity check reads. It survives
// NATS restarts (the watcher is re-created when it stops).
type recorder struct {
	mu      sync.Mutex
	history map[string][]queue.Status // status key -> values in revision order
	lastRev map[string]uint64
	// successes are the (local) times a status key turned succeeded.
	successes []time.Time
	stop      context.CancelFunc
	done      chan struct{}
}

func newRecorder(t *testing.T, c *client) *recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{history: map[string][]queue.Status{}, lastRev: map[string]uint64{}, stop: cancel, done: make(chan struct{})}
	go r.run(ctx, c)
	t.Cleanup(r.close)
	return r
}

func (r *recorder) close() {
	r.stop()
	<-r.done
}

func (r *recorder) run(ctx context.Context, c *client) {
	defer close(r.done)
	for ctx.Err() == nil {
		kv, err := c.js.KeyValue(ctx, queue.StatusBucket)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		w, err := kv.WatchAll(ctx, jetstream.IncludeHistory())
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		r.consume(ctx, w)
		_ = w.Stop()
	}
}

func (r *recorder) consume(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var st queue.Status
			if json.Unmarshal(e.Value(), &st) != nil {
				continue
			}
			r.mu.Lock()
			if e.Revision() > r.lastRev[e.Key()] {
				r.lastRev[e.Key()] = e.Revision()
				h := r.history[e.Key()]
				if st.State == queue.StateSucceeded && (len(h) == 0 || h[len(h)-1].State != queue.StateSucceeded || h[len(h)-1].Key != st.Key) {
					r.successes = append(r.successes, time.Now())
				}
				r.history[e.Key()] = append(h, st)
			}
			r.mu.Unlock()
		}
	}
}

// recoveredAfter is the time from t0 to the first success recorded after
// it; ok is false when none was.
func (r *recorder) recoveredAfter(t0 time.Time) (d time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.successes {
		if s.After(t0) {
			return s.Sub(t0), true
		}
	}
	return 0, false
}

// states is the recorded state sequence of one image's status key.
func (r *recorder) states(imageOrDigest string) []string {
	key, _ := queue.StatusKey(imageOrDigest)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, st := range r.history[key] {
		out = append(out, fmt.Sprintf("%s(seq %d, attempt %d)", st.State, st.Seq, st.Attempts))
	}
	return out
}

// violations lists every non-monotonic step of every recorded history: a
// status of an older request (lower seq) after a newer one; for one
// request, queued after it ran, anything after a final state but the same
// final state, and attempts going down other than into a final state (a
// redelivered request whose first attempt succeeds last is settled by it).
func (r *recorder) violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	keys := make([]string, 0, len(r.history))
	for k := range r.history {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h := r.history[k]
		for i := 1; i < len(h); i++ {
			prev, cur := h[i-1], h[i]
			bad := ""
			switch {
			case cur.Seq < prev.Seq:
				bad = "an older request overwrote a newer one"
			case cur.Seq > prev.Seq || cur.Key != prev.Key:
				continue
			case prev.State == queue.StateDead && cur.State == queue.StateSucceeded:
				continue // an older attempt's late success (queue.Supersedes)
			case prev.State.Final() && cur.State != prev.State:
				bad = "left a final state"
			case cur.State == queue.StateQueued && prev.State != queue.StateQueued:
				bad = "went back to queued"
			case cur.Attempts < prev.Attempts && !(cur.State.Final() && !prev.State.Final()):
				// An older attempt may only settle the request: a final
				// state ends the message whatever attempt reaches it.
				bad = "attempts went down"
			}
			if bad != "" {
				out = append(out, fmt.Sprintf("%s: %s: %s(seq %d, attempt %d) -> %s(seq %d, attempt %d)",
					h[i].Image, bad, prev.State, prev.Seq, prev.Attempts, cur.State, cur.Seq, cur.Attempts))
			}
		}
	}
	return out
}

// finalOf waits (up to d) for the status of imageOrDigest to be final for
// request key and returns it; nil when it never was.
func (c *client) finalOf(imageOrDigest, key string, d time.Duration) *queue.Status {
	var got *queue.Status
	waitFor(d, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.q.Status(ctx, imageOrDigest)
		if err != nil || st.Key != key || !st.State.Final() {
			return false
		}
		got = st
		return true
	})
	return got
}

// notApplicable is the recovery time of a scenario without a fault to
// recover from.
const notApplicable = time.Duration(-1 << 62)

// summary is the one line per scenario CI output keeps.
type summary struct {
	scenario   string
	server     string
	requests   int
	artifacts  int
	lost       int
	duplicates int
	recover    time.Duration // < 0: did not recover
	bound      time.Duration
	extra      string
}

func (s summary) print(t *testing.T) {
	rec := s.recover.Round(100 * time.Millisecond).String()
	switch {
	case s.recover == notApplicable:
		rec = "n/a"
	case s.recover < 0:
		rec = "never"
	}
	line := fmt.Sprintf("FAULT-SUMMARY %s nats=%s: requests=%d artifacts=%d lost=%d duplicates=%d max-recover=%s",
		s.scenario, s.server, s.requests, s.artifacts, s.lost, s.duplicates, rec)
	if s.bound > 0 {
		line += fmt.Sprintf(" (bound %v)", s.bound)
	}
	if s.extra != "" {
		line += " " + s.extra
	}
	if t.Failed() {
		line += " FAILED"
	}
	t.Log(line)
	fmt.Println(line)
}

// auditImages counts the artifacts of each image: total, and duplicates
// (every artifact beyond the first of an image). Images without any are
// returned as missing.
func auditImages(t *testing.T, ims []image) (total, dups int, missing []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, im := range ims {
		arts, err := artifacts(ctx, t, im)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		total += len(arts)
		if len(arts) > 1 {
			dups += len(arts) - 1
			t.Errorf("%s has %d artifacts, want exactly 1: %s", im.digest, len(arts), strings.Join(arts, ", "))
		}
		if len(arts) == 0 {
			missing = append(missing, im.digest)
		}
	}
	return total, dups, missing
}
