//go:build fault && linux

package fault

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
)

// slowRate is the registry bandwidth that makes fetching bytes take at
// least 3x the longest internal timeout of k.
func slowRate(t *testing.T, k knobs, bytes int64) (rate float64, fetch time.Duration) {
	fetch = 3 * k.longest(t)
	return float64(bytes) / fetch.Seconds(), fetch
}

// midBuild waits until a worker runs im's request and has fetched a third
// of its layer bytes through the throttled registry.
func midBuild(t *testing.T, c *client, th *throttle, im image, key string, d time.Duration) {
	t.Helper()
	if !waitFor(d, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.q.Status(ctx, im.tag)
		return err == nil && st.Key == key && st.State == queue.StateRunning && th.servedFor(im.path()) >= im.bytes/3
	}) {
		t.Fatalf("%s never got mid-build within %v (served %d of %d bytes)", im.tag, d, th.servedFor(im.path()), im.bytes)
	}
}

// (a) A worker is SIGKILLed in the middle of a build that takes 3x the
// longest internal timeout; the other worker must complete the request
// within ack-wait + 60 s, with exactly one artifact, a monotonic status
// history and no crash of any worker.
func TestWorkerKilledMidBuild(t *testing.T) {
	for _, flavour := range []string{"current", "2.9"} {
		t.Run("nats-"+flavour, func(t *testing.T) { workerKilledMidBuild(t, flavour) })
	}
}

func workerKilledMidBuild(t *testing.T, flavour string) {
	bin := needNATS(t, flavour)
	logs := logDir(t)
	th := newThrottle(0)
	host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(th.middleware))
	im := pushImage(t, host, "killed-"+strings.ReplaceAll(flavour, ".", ""), 1)
	ns := startNATS(t, logs, bin)
	e := &env{t: t, logs: logs, natsURL: ns.url(), registry: host, knobs: defaultKnobs}
	rate, fetch := slowRate(t, e.knobs, im.bytes)
	th.setRate(rate)
	t.Logf("knobs: %s; registry throttled to %.0f B/s: fetching %s (%d bytes) takes >= %v", e.knobs.describe(), rate, im.tag, im.bytes, fetch)

	a := e.startWorker("worker-a")
	c := newClient(t, ns.url())
	rec := newRecorder(t, c)
	key := c.submit(t, im.tag)
	// Worker b starts once a is converting, so that a holds the request.
	midBuild(t, c, th, im, key, fetch+60*time.Second)
	b := e.startWorker("worker-b")
	midBuild(t, c, th, im, key, fetch+60*time.Second)
	killed := time.Now()
	a.kill9()
	t.Logf("killed worker-a at %s (served %d of %d bytes)", killed.Format(time.RFC3339Nano), th.servedFor(im.path()), im.bytes)

	bound := e.knobs.ackWait + 60*time.Second
	st := c.finalOf(im.tag, key, bound)
	recovered := time.Since(killed)
	sum := summary{scenario: "worker-kill-mid-build", server: flavour, requests: 1, bound: bound, recover: recovered,
		extra: fmt.Sprintf("conversion>=%v knobs[%s]", fetch, e.knobs.describe())}
	defer func() { sum.print(t) }()
	switch {
	case st == nil:
		sum.lost, sum.recover = 1, -1
		t.Errorf("the request did not complete within ack-wait + 60 s = %v of the kill; status history %v\nworker-b log tail:\n%s",
			bound, rec.states(im.tag), b.tail(25))
	case st.State != queue.StateSucceeded:
		sum.lost = 1
		t.Errorf("the request ended %s: %s (reason %s); history %v", st.State, st.LastError, st.Reason, rec.states(im.tag))
	default:
		// The log line follows the status update (status, ack, result, log).
		if !waitFor(10*time.Second, func() bool { return len(b.grep("conversion succeeded")) > 0 }) {
			t.Errorf("worker-b logged no success although the status says succeeded")
		}
	}
	n, dups, missing := auditImages(t, []image{im})
	sum.artifacts, sum.duplicates = n, dups
	if st != nil && st.State == queue.StateSucceeded && len(missing) > 0 {
		t.Errorf("status says succeeded but %s has no artifact", im.digest)
	}
	for _, v := range rec.violations() {
		t.Errorf("status not monotonic: %s", v)
	}
	t.Logf("status history of %s: %v", im.tag, rec.states(im.tag))
	e.checkProcs()
}
