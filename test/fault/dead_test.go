//go:build fault && linux

package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// Requests that can never succeed are dead-lettered once and stay dead, on
// every supported server: NATS 2.9 (Debian) ignored TermWithReason, so each
// dead letter ran again every ack-wait until max-deliver (issue 9 item 4).
// After the dead letters the test waits three ack-waits and checks that no
// request ran again, no dead letter was added and no status left `dead`.
func TestDeadLetterOnce(t *testing.T) {
	for _, flavour := range []string{"current", "2.9"} {
		t.Run("nats-"+flavour, func(t *testing.T) { deadLetterOnce(t, flavour) })
	}
}

func deadLetterOnce(t *testing.T, flavour string) {
	bin := needNATS(t, flavour)
	logs := logDir(t)
	host := registrytest.NewReferrersRegistry(t)
	garbage := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	linux := pushLayers(t, host, "linux-only", [][]byte{registrytest.Gzip(t, registrytest.Tar(t, "etc/hostname", "linux\n"))},
		v1.Platform{OS: "linux", Architecture: "amd64"})
	junk := pushLayers(t, host, "garbage-layer", [][]byte{fixture.BaseLayer().Bytes(fixture.Gzip), registrytest.Gzip(t, garbage)}, winPlatform)
	bad := []string{linux.tag, junk.tag, host + "/fault/missing:v1"}

	ns := startNATS(t, logs, bin)
	e := &env{t: t, logs: logs, natsURL: ns.url(), registry: host, knobs: defaultKnobs}
	w := e.startWorker("worker")
	c := newClient(t, ns.url())
	rec := newRecorder(t, c)
	sum := summary{scenario: "dead-letter-once", server: flavour, requests: len(bad), recover: notApplicable}
	defer func() { sum.print(t) }()

	keys := map[string]string{}
	for _, img := range bad {
		keys[img] = c.submit(t, img)
	}
	for _, img := range bad {
		st := c.finalOf(img, keys[img], time.Duration(e.knobs.maxDeliver+1)*(e.knobs.ackWait+5*time.Second))
		if st == nil || st.State != queue.StateDead {
			sum.lost++
			t.Errorf("%s: want dead, status %+v; history %v", img, st, rec.states(img))
		}
	}
	// Long enough for a request the server did not terminate to come back.
	time.Sleep(3 * e.knobs.ackWait)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dead, err := c.q.Dead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	letters := map[string]int{}
	for _, d := range dead {
		if d.Request != nil {
			letters[d.Request.IdempotencyKey()]++
		}
	}
	var runs []string
	for _, img := range bad {
		k := keys[img]
		startedRuns := 0
		for _, l := range w.grep("conversion started") {
			if strings.Contains(l, k) {
				startedRuns++
			}
		}
		runs = append(runs, fmt.Sprintf("%s:%d", img[strings.LastIndex(img, "/")+1:], startedRuns))
		if letters[k] != 1 {
			sum.duplicates += max(letters[k]-1, 0)
			t.Errorf("%s: %d dead letters, want exactly 1", img, letters[k])
		}
		if startedRuns != 1 {
			t.Errorf("%s: ran %d times, want once: a dead-lettered request must not be redelivered", img, startedRuns)
		}
		if st := c.finalOf(img, k, time.Second); st == nil || st.State != queue.StateDead {
			t.Errorf("%s: status left dead: %+v; history %v", img, st, rec.states(img))
		}
	}
	sum.extra = "runs[" + strings.Join(runs, " ") + "]"
	for _, v := range rec.violations() {
		t.Errorf("status not monotonic: %s", v)
	}
	e.checkProcs()
	ns.check()
}
