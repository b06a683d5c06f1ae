//go:build fault && linux

package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
)

// (d) 200 requests over 20 images while a worker is SIGKILLed every 10 s
// and restarted: every image ends with exactly one artifact, every request
// ends (none lost, none dead-lettered), no status is left running.
//
// Each image gets 10 requests with distinct idempotency keys (by tag and by
// digest, times five os.version policies that all select its manifest), so
// the 200 are 200 deliveries, not 20 deliveries and 180 deduplicated
// publishes. All images share the base layer, so workers contend for its
// chain claim. The requests arrive in ten waves over a minute.
// Conversions here are short (about 2 s of throttled fetch): with a kill
// every 10 s a conversion several times the timeouts could rarely finish;
// the long-conversion cases are (a)-(c).
func TestWorkerChurn(t *testing.T) {
	bin := needNATS(t, "current")
	logs := logDir(t)
	const (
		images      = 20
		perImage    = 10
		killEvery   = 10 * time.Second
		workerCount = 3
	)
	th := newThrottle(0)
	host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(th.middleware))
	var ims []image
	for i := range images {
		ims = append(ims, pushImage(t, host, fmt.Sprintf("churn%02d", i), i+1))
	}
	th.setRate(float64(ims[0].bytes) / 2)
	ns := startNATS(t, logs, bin)
	k := defaultKnobs
	k.maxDeliver = 8 // a request may be on a killed worker several times
	e := &env{t: t, logs: logs, natsURL: ns.url(), registry: host, knobs: k}
	var workers []*proc
	for i := range workerCount {
		workers = append(workers, e.startWorker(fmt.Sprintf("worker-%d", i)))
	}
	c := newClient(t, ns.url())
	rec := newRecorder(t, c)
	t.Logf("knobs: %s; %d images, %d requests, %d workers, one SIGKILLed every %v", k.describe(), images, images*perImage, workerCount, killEvery)

	type request struct {
		req queue.Request
		key string
		im  image
	}
	policies := []string{"", "20348", "10.0.20348", "10.0.20348.2031", "compatible:20348"}
	var reqs []request
	for _, im := range ims {
		for _, ref := range []string{im.tag, im.digest} {
			for _, p := range policies {
				r := queue.Request{Image: ref, OSVersion: p, Requester: "fault-suite"}
				reqs = append(reqs, request{req: r, key: r.IdempotencyKey(), im: im})
			}
		}
	}
	rng := rand.New(rand.NewPCG(9, 200))
	rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	seen := map[string]bool{}
	for _, r := range reqs {
		if seen[r.key] {
			t.Fatalf("two requests share key %s", r.key)
		}
		seen[r.key] = true
	}

	// The killer: every killEvery, SIGKILL the next worker and start it again.
	var (
		mu    sync.Mutex
		kills []time.Time
	)
	stopKill := make(chan struct{})
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		tick := time.NewTicker(killEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopKill:
				return
			case <-tick.C:
			}
			w := workers[i%len(workers)]
			w.kill9()
			mu.Lock()
			kills = append(kills, time.Now())
			mu.Unlock()
			w.start() // not waiting for /readyz: the next kill may come first
		}
	}()

	// Requests arrive in waves over a minute, so that the run spans several
	// kills rather than finishing between two.
	start := time.Now()
	const waves = 10
	for i := range waves {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for _, r := range reqs[i*len(reqs)/waves : (i+1)*len(reqs)/waves] {
			if dup, err := c.q.Submit(ctx, r.req); err != nil || dup {
				t.Fatalf("submit %s (%s): dup %v, %v", r.req.Image, r.req.OSVersion, dup, err)
			}
		}
		cancel()
		if i < waves-1 {
			time.Sleep(6 * time.Second)
		}
	}

	// Done: a final status recorded for the key, or its result event (the
	// status of an image holds its newest request only: an older request
	// finishing later does not overwrite it).
	final := map[string]queue.State{}
	results := map[string]*queue.Result{}
	pending := func() int {
		rec.mu.Lock()
		for _, h := range rec.history {
			for _, st := range h {
				if st.State.Final() {
					final[st.Key] = st.State
				}
			}
		}
		rec.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n := 0
		for _, r := range reqs {
			if _, ok := final[r.key]; ok {
				continue
			}
			if res, err := c.result(ctx, r.key); err == nil && res != nil {
				results[r.key] = res
				final[r.key] = queue.StateSucceeded
				if !res.Succeeded() {
					final[r.key] = queue.StateDead
				}
				continue
			}
			n++
		}
		return n
	}
	poll := func(d time.Duration) {
		deadline := time.Now().Add(d)
		for pending() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Second)
		}
	}
	poll(4 * time.Minute)
	close(stopKill)
	<-killerDone
	// Let the last restarted workers finish what the last kill interrupted.
	poll(k.ackWait + 60*time.Second)
	elapsed := time.Since(start)

	sum := summary{scenario: "worker-churn", server: "current", requests: len(reqs)}
	defer func() { sum.print(t) }()
	// Requests the recorder missed (its watch restarts) are checked against
	// their result events.
	rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
	defer rcancel()
	dead, missingResults := 0, 0
	for _, r := range reqs {
		res := results[r.key]
		if res == nil {
			var err error
			if res, err = c.result(rctx, r.key); err != nil {
				t.Errorf("result of %s: %v", r.key, err)
			}
		}
		if res == nil {
			missingResults++
		}
		st, ok := final[r.key]
		switch {
		case !ok:
			sum.lost++
			t.Errorf("request lost: %s os.version %q (key %s): no final state, no result; history %v", r.req.Image, r.req.OSVersion, r.key, rec.states(r.req.Image))
		case st != queue.StateSucceeded:
			dead++
			sum.lost++
			t.Errorf("request dead-lettered: %s os.version %q: %v", r.req.Image, r.req.OSVersion, res)
		}
	}
	// Nothing left running.
	for _, im := range ims {
		for _, ref := range []string{im.tag, im.digest} {
			st, err := c.q.Status(rctx, ref)
			if err != nil {
				t.Errorf("status of %s: %v", ref, err)
				continue
			}
			if !st.State.Final() {
				t.Errorf("%s left %s (attempt %d)", ref, st.State, st.Attempts)
			}
		}
	}
	mu.Lock()
	for _, kt := range kills {
		d, ok := rec.recoveredAfter(kt)
		if !ok {
			if pending() > 0 {
				sum.recover = -1
			}
			continue
		}
		sum.recover = max(sum.recover, d)
	}
	sum.extra = fmt.Sprintf("kills=%d dead=%d result-events-missing=%d elapsed=%v", len(kills), dead, missingResults, elapsed.Round(time.Second))
	mu.Unlock()
	sum.artifacts, sum.duplicates, _ = auditImages(t, ims)
	for _, v := range rec.violations() {
		t.Errorf("status not monotonic: %s", v)
	}
	e.checkProcs()
	ns.check()
}
