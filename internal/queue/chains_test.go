package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

var chainID = "sha256:" + strings.Repeat("c", 64)

// abandon stops a claim's renewals without releasing it: its holder died.
func (cl *Claim) abandon() {
	cl.once.Do(func() { close(cl.stop) })
	<-cl.done
}

// fakeClock is an injected clock for the chain cache's staleness judgement.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func TestChainClaimOneWinner(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	type outcome struct {
		worker string
		cl     *Claim
		holder *ClaimHolder
		err    error
	}
	var wg sync.WaitGroup
	res := make(chan outcome, 2)
	for _, w := range []string{"worker-a", "worker-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, h, err := c.Claim(ctx, chainID, w, time.Minute)
			res <- outcome{w, cl, h, err}
		}()
	}
	wg.Wait()
	close(res)
	var winner, loser outcome
	for o := range res {
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.cl != nil {
			if winner.cl != nil {
				t.Fatalf("both %s and %s won the claim", winner.worker, o.worker)
			}
			winner = o
		} else {
			loser = o
		}
	}
	if winner.cl == nil || loser.holder == nil {
		t.Fatalf("winner %+v loser %+v", winner, loser)
	}
	if loser.holder.Worker != winner.worker || loser.holder.Token != winner.cl.Holder().Token {
		t.Errorf("loser sees holder %+v, want %s with the winner's token", loser.holder, winner.worker)
	}
	if err := winner.cl.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if cl, h, err := c.Claim(ctx, chainID, loser.worker, time.Minute); err != nil || cl == nil {
		t.Errorf("claim after release: holder=%+v err=%v", h, err)
	}
}

// Issue 14 bug 2: the owner is the claim, not the process. Two conversions
// of one worker must not both win one claim.
func TestChainClaimIsPerCallNotPerWorker(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	first, _, err := c.Claim(ctx, chainID, "worker-a", time.Minute)
	if err != nil || first == nil {
		t.Fatalf("first claim: %v", err)
	}
	defer first.Release(ctx)
	second, holder, err := c.Claim(ctx, chainID, "worker-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if second != nil {
		t.Fatal("a second claim by the same worker won: it was taken for a renewal")
	}
	if holder.Token != first.Holder().Token {
		t.Errorf("holder token %s, want the first claim's %s", holder.Token, first.Holder().Token)
	}
}

func TestChainStaleClaimIsTakenOver(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	clock := &fakeClock{now: time.Now()}
	c.now = clock.Now
	const ttl = time.Minute // renewals (every 20s) never happen during the test

	dead, _, err := c.Claim(ctx, chainID, "dead-worker", ttl)
	if err != nil || dead == nil {
		t.Fatalf("first claim: %v", err)
	}
	dead.abandon() // kill -9: no renewal, no release
	if cl, _, _ := c.Claim(ctx, chainID, "other", ttl); cl != nil {
		t.Fatal("a fresh claim was taken over")
	}
	clock.Add(ttl - time.Second)
	if cl, _, _ := c.Claim(ctx, chainID, "other", ttl); cl != nil {
		t.Fatal("a claim younger than its ttl was taken over")
	}
	clock.Add(time.Second)
	other, _, err := c.Claim(ctx, chainID, "other", ttl)
	if err != nil || other == nil {
		t.Fatalf("stale claim not taken over: %v", err)
	}
	defer other.Release(ctx)
	// The dead holder, were it to come back, has lost the claim, and its
	// release does not drop the new holder's claim.
	if err := dead.Renew(ctx); !errors.Is(err, ErrClaimLost) {
		t.Errorf("renewal by the former holder: %v, want ErrClaimLost", err)
	}
	if err := dead.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if cl, h, _ := c.Claim(ctx, chainID, "third", ttl); cl != nil || h == nil || h.Worker != "other" {
		t.Fatalf("after the former holder's release: claim %v holder %+v, want held by other", cl, h)
	}
}

func TestChainRenewedClaimIsNotTakenOver(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	clock := &fakeClock{now: time.Now()}
	c.now = clock.Now
	const ttl = 300 * time.Millisecond // renewed every 100ms (real time)

	live, _, err := c.Claim(ctx, chainID, "live-worker", ttl)
	if err != nil || live == nil {
		t.Fatalf("first claim: %v", err)
	}
	defer live.Release(ctx)
	key, _ := chainKey("claim", chainID)
	for round := range 3 {
		e, err := c.kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if cl, _, _ := c.Claim(ctx, chainID, "other", ttl); cl != nil {
			t.Fatalf("round %d: live claim taken over", round)
		}
		// Wait for the holder's next renewal, then let more than a ttl
		// pass on the observer's clock.
		waitFor(t, "a renewal", func() bool {
			n, err := c.kv.Get(ctx, key)
			return err == nil && n.Revision() != e.Revision()
		})
		clock.Add(2 * ttl)
	}
	if !live.Held() {
		t.Error("the live holder lost its claim")
	}
}

func TestChainAcquire(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	const ttl = 300 * time.Millisecond

	// A dead winner: its claim goes stale and the next worker builds.
	_, dead, err := c.Acquire(ctx, chainID, "dies", ttl)
	if err != nil || dead == nil {
		t.Fatalf("first acquire: claim=%v err=%v", dead, err)
	}
	dead.abandon()
	waited := make(chan ClaimHolder, 4)
	v, survivor, err := c.Acquire(ctx, chainID, "survivor", ttl, OnWait(func(h ClaimHolder) { waited <- h }))
	if err != nil || survivor == nil || v != nil {
		t.Fatalf("after the dead winner's ttl: value=%q claim=%v err=%v, want the claim", v, survivor, err)
	}
	if h := <-waited; h.Worker != "dies" {
		t.Errorf("waited for %+v, want the dead worker", h)
	}

	// A live winner: the waiter says whom it waits for and gets the value
	// without building.
	got := make(chan []byte, 1)
	waited = make(chan ClaimHolder, 4)
	go func() {
		v, cl, err := c.Acquire(ctx, chainID, "waiter", ttl, OnWait(func(h ClaimHolder) { waited <- h }))
		if err != nil || cl != nil {
			t.Errorf("waiter: claim=%v err=%v", cl, err)
		}
		got <- v
	}()
	if h := <-waited; h.Worker != "survivor" {
		t.Errorf("waiting for %+v, want survivor", h)
	}
	if err := c.Put(ctx, chainID, []byte("blob")); err != nil {
		t.Fatal(err)
	}
	if err := survivor.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if v := <-got; string(v) != "blob" {
		t.Errorf("waiter got %q", v)
	}
	if v, cl, err := c.Acquire(ctx, chainID, "late", ttl); err != nil || cl != nil || string(v) != "blob" {
		t.Errorf("late acquire: %q claim=%v err=%v", v, cl, err)
	}
}

func TestChainAcquireSeesRelease(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	holder, _, err := c.Claim(ctx, chainID, "holder", time.Hour) // never stale during the test
	if err != nil || holder == nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	won := make(chan *Claim, 1)
	go func() {
		_, cl, err := c.Acquire(ctx, chainID, "waiter", time.Hour, OnWait(func(ClaimHolder) { close(waiting) }))
		if err != nil {
			t.Error(err)
		}
		won <- cl
	}()
	<-waiting
	if err := holder.Release(ctx); err != nil { // a failed build: no value
		t.Fatal(err)
	}
	if cl := <-won; cl == nil {
		t.Error("the waiter did not take the released claim")
	} else {
		_ = cl.Release(ctx)
	}
}

func TestChainAcquireHonoursContext(t *testing.T) {
	q, _ := openQueue(t)
	c := q.Chains()
	holder, _, err := c.Claim(ctxT(t), chainID, "holder", time.Hour)
	if err != nil || holder == nil {
		t.Fatal(err)
	}
	defer holder.Release(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	_, _, err = c.Acquire(ctx, chainID, "waiter", time.Hour, OnWait(func(ClaimHolder) { cancel() }))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "holder") {
		t.Errorf("err = %v, want cancelled naming the holder", err)
	}
	if _, _, err := c.Claim(ctxT(t), "not-a-digest", "a", time.Minute); err == nil || !strings.Contains(err.Error(), "not-a-digest") {
		t.Errorf("bad chainID: err = %v", err)
	}
}

// Chains.seen (claim key -> sighting) gains an entry for every claim this
// process waits on; a wait that ends with the value (the common case) must
// drop it, or a long-lived worker keeps one per chain it ever waited for.
func TestChainsForgetsTheClaimsItWaitedFor(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	const n = 20
	for i := range n {
		id := fmt.Sprintf("sha256:%064x", i+1)
		holder, _, err := c.Claim(ctx, id, "builder", time.Minute)
		if err != nil || holder == nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		got := make(chan error, 1)
		go func() {
			_, cl, err := c.Acquire(ctx, id, "waiter", time.Minute)
			if cl != nil {
				err = fmt.Errorf("waiter won the claim")
			}
			got <- err
		}()
		time.Sleep(50 * time.Millisecond) // the waiter saw the claim
		if err := c.Put(ctx, id, []byte("blob")); err != nil {
			t.Fatal(err)
		}
		_ = holder.Release(ctx)
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	left := len(c.seen)
	c.mu.Unlock()
	if left != 0 {
		t.Errorf("%d sightings left after %d finished waits (every chain waited on stays in memory)", left, n)
	}
}
