//go:build fault && linux

package fault

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/testport"
)

// (c) A 3-node NATS cluster (routes on loopback) with the stream and the
// buckets at 3 replicas (the service's nats-replicas). Conversions arrive
// through a webhook receiver from a real distribution registry (fallback
// tags, no referrers API). Mid-run the CIMCONV stream leader is SIGKILLed;
// once a new leader is elected and the node is back, a follower is
// SIGKILLed and restarted. Every pushed image must end with exactly one
// artifact, workers and the webhook receiver must reconnect, no process may
// crash.
func TestNATSClusterFailover(t *testing.T) {
	bin := needNATS(t, "current")
	logs := logDir(t)
	nodes := startCluster(t, logs, bin, 3)
	const token = "fault-token"
	hookPort := testport.Port(t)
	th := newThrottle(0)
	host := registrytest.NewDistribution(t,
		registrytest.WithNotifications(fmt.Sprintf("http://127.0.0.1:%d/webhooks/distribution", hookPort),
			http.Header{"Authorization": {"Bearer " + token}}),
		registrytest.WithMiddleware(th.middleware))
	e := &env{t: t, logs: logs, natsURL: clusterURL(nodes), replicas: 3, registry: host, knobs: defaultKnobs}
	workers := []*proc{e.startWorker("worker-a"), e.startWorker("worker-b")}
	hook := e.startWebhook("webhook", token, hookPort)
	c := newClient(t, e.natsURL)
	rec := newRecorder(t, c)

	var ims []image
	var fetch time.Duration
	push := func(n int) image {
		im := pushImage(t, host, fmt.Sprintf("cluster%d", n), n)
		if fetch == 0 {
			var rate float64
			rate, fetch = slowRate(t, e.knobs, im.bytes)
			th.setRate(rate)
			t.Logf("knobs: %s; conversion >= %v", e.knobs.describe(), fetch)
		}
		ims = append(ims, im)
		return im
	}
	// running waits until some pushed image is being converted.
	running := func(what string) {
		t.Helper()
		if !waitFor(fetch+2*time.Minute, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, im := range ims {
				if st, err := c.q.Status(ctx, im.digest); err == nil && st.State == queue.StateRunning && th.servedFor(im.path()) > 0 {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("nothing converting before %s", what)
		}
	}
	byName := map[string]*natsNode{}
	for _, n := range nodes {
		byName[n.serverName] = n
	}
	leader := func() *natsNode {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return byName[c.streamLeader(ctx, queue.StreamName)]
	}
	sum := summary{scenario: "nats-cluster-failover", server: "current x3"}
	defer func() { sum.print(t) }()
	var faults []time.Time
	var elections []string

	push(1)
	push(2)
	running("killing the leader")
	old := leader()
	if old == nil {
		t.Fatal("the CIMCONV stream has no leader")
	}
	killed := time.Now()
	old.kill9()
	faults = append(faults, killed)
	var next *natsNode
	if !waitFor(60*time.Second, func() bool { next = leader(); return next != nil && next != old }) {
		t.Fatalf("no new CIMCONV leader within 60 s of killing %s", old.serverName)
	}
	elections = append(elections, fmt.Sprintf("%s->%s in %v", old.serverName, next.serverName, time.Since(killed).Round(100*time.Millisecond)))
	push(3)
	push(4)
	old.start()
	waitNATS(t, old.url(), 60*time.Second)

	running("killing a follower")
	var follower *natsNode
	if l := leader(); l != nil {
		for _, n := range nodes {
			if n != l {
				follower = n
				break
			}
		}
	}
	if follower == nil {
		t.Fatal("no CIMCONV leader to pick a follower of")
	}
	faults = append(faults, time.Now())
	follower.kill9()
	push(5)
	push(6)
	time.Sleep(e.knobs.ackWait)
	follower.start()
	waitNATS(t, follower.url(), 60*time.Second)

	sum.requests = len(ims)
	bound := fetch*time.Duration(len(ims)) + e.knobs.ackWait + 2*time.Minute
	for _, im := range ims {
		var st *queue.Status
		waitFor(bound, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := c.q.Status(ctx, im.digest)
			st = s
			return err == nil && s.State.Final()
		})
		if st == nil || st.State != queue.StateSucceeded {
			sum.lost++
			t.Errorf("%s: not converted after the failovers: %+v; history %v", im.digest, st, rec.states(im.digest))
		}
	}
	for _, f := range faults {
		d, ok := rec.recoveredAfter(f)
		if !ok {
			sum.recover = -1
			break
		}
		sum.recover = max(sum.recover, d)
	}
	sum.artifacts, sum.duplicates, _ = auditImages(t, ims)
	// An election is not a failed attempt: the queue's operations wait for
	// the new leader (before, each delivery that met one failed at once with
	// "no response from stream", and one request was dead-lettered).
	var retries, rides int
	for _, w := range workers {
		for _, l := range w.grep("conversion failed; will retry", "dead-lettering", "conversion failed; dead-lettered") {
			retries++
			if strings.Contains(l, "no response from stream") || strings.Contains(l, "NATS unavailable") || strings.Contains(l, "no responders") {
				t.Errorf("%s: a delivery failed because NATS was electing a leader: %s", w.name, l)
			}
		}
		rides += len(w.grep("NATS cannot answer"))
	}
	sum.extra = fmt.Sprintf("killed leader %s, then follower %s; elections %v; webhook reconnects %d; operations that waited for NATS %d; failed attempts %d",
		old.serverName, follower.serverName, elections, len(hook.grep("reconnected")), rides, retries)
	for _, v := range rec.violations() {
		t.Errorf("status not monotonic: %s", v)
	}
	e.checkProcs()
	for _, n := range nodes {
		n.check()
	}
}
