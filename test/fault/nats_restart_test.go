//go:build fault && linux

package fault

import (
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
)

// (b) nats-server is SIGKILLed and restarted (same port, same store) once in
// the middle of a build and once while the service is idle: every request
// completes, none is converted twice into two artifacts, and the workers
// take new work after the restart.
func TestNATSKilledAndRestarted(t *testing.T) {
	for _, flavour := range []string{"current", "2.9"} {
		t.Run("nats-"+flavour, func(t *testing.T) { natsKilledAndRestarted(t, flavour) })
	}
}

func natsKilledAndRestarted(t *testing.T, flavour string) {
	bin := needNATS(t, flavour)
	logs := logDir(t)
	th := newThrottle(0)
	host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(th.middleware))
	tag := strings.ReplaceAll(flavour, ".", "")
	mid := pushImage(t, host, "nats-mid-"+tag, 1)
	idle := pushImage(t, host, "nats-idle-"+tag, 2)
	ns := startNATS(t, logs, bin)
	e := &env{t: t, logs: logs, natsURL: ns.url(), registry: host, knobs: defaultKnobs}
	rate, fetch := slowRate(t, e.knobs, mid.bytes)
	th.setRate(rate)
	t.Logf("knobs: %s; conversion >= %v", e.knobs.describe(), fetch)
	e.startWorker("worker-a")
	e.startWorker("worker-b")
	c := newClient(t, ns.url())
	rec := newRecorder(t, c)
	sum := summary{scenario: "nats-kill-restart", server: flavour, requests: 2, bound: e.knobs.ackWait + 60*time.Second}
	defer func() { sum.print(t) }()

	submit := func(im image) string { return c.submit(t, im.tag) }
	restartNATS := func(what string) time.Time {
		t.Helper()
		ns.kill9()
		t.Logf("killed nats-server (%s)", what)
		time.Sleep(2 * time.Second)
		ns.start()
		waitNATS(t, ns.url(), 60*time.Second)
		return time.Now()
	}
	var lost []string
	wait := func(im image, key string, since time.Time) {
		t.Helper()
		st := c.finalOf(im.tag, key, fetch+sum.bound)
		if st == nil || st.State != queue.StateSucceeded {
			lost = append(lost, im.tag)
			sum.recover = -1
			t.Errorf("%s did not succeed after the NATS restart: status %+v; history %v", im.tag, st, rec.states(im.tag))
			return
		}
		if sum.recover >= 0 {
			sum.recover = max(sum.recover, time.Since(since))
		}
	}

	// Mid-build.
	key := submit(mid)
	midBuild(t, c, th, mid, key, fetch+60*time.Second)
	wait(mid, key, restartNATS("mid-build"))

	// Idle: nothing in flight; then new work must still flow, and a
	// resubmission of the finished image must not make a second artifact.
	th.setRate(0)
	restartNATS("idle")
	th.setRate(rate)
	key2 := submit(idle)
	submit(mid)
	wait(idle, key2, time.Now())
	// Nothing failed during that conversion: it must settle on its first
	// delivery. (A settle deadline that starts with the handler, shorter
	// than the conversion, fails the ack and burns a redelivery.)
	if st := c.finalOf(idle.tag, key2, time.Second); st != nil && st.Attempts != 1 {
		t.Errorf("%s: converted with no fault but settled on attempt %d, want 1; history %v", idle.tag, st.Attempts, rec.states(idle.tag))
	}
	st := c.finalOf(mid.tag, key, 30*time.Second)
	if st == nil || st.State != queue.StateSucceeded {
		t.Errorf("%s: status after resubmission %+v", mid.tag, st)
	}

	sum.lost = len(lost)
	sum.artifacts, sum.duplicates, _ = auditImages(t, []image{mid, idle})
	for _, v := range rec.violations() {
		t.Errorf("status not monotonic: %s", v)
	}
	e.checkProcs()
	ns.check()
}
