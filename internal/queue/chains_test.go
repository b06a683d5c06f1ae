package queue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var chainID = "sha256:" + strings.Repeat("c", 64)

func TestChainClaimLoserWaitsForWinner(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	type outcome struct {
		owner string
		won   bool
		err   error
	}
	var wg sync.WaitGroup
	res := make(chan outcome, 2)
	for _, owner := range []string{"worker-a", "worker-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			won, err := c.Claim(ctx, chainID, owner, time.Minute)
			res <- outcome{owner, won, err}
		}()
	}
	wg.Wait()
	close(res)
	var winner, loser string
	for o := range res {
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.won {
			if winner != "" {
				t.Fatalf("both %s and %s won the claim", winner, o.owner)
			}
			winner = o.owner
		} else {
			loser = o.owner
		}
	}
	if winner == "" || loser == "" {
		t.Fatalf("winner %q loser %q", winner, loser)
	}
	got := make(chan []byte, 1)
	go func() {
		v, err := c.Wait(ctx, chainID)
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	time.Sleep(100 * time.Millisecond) // let the loser start waiting before the value exists
	if _, err := c.Get(ctx, chainID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("value before Put: %v", err)
	}
	want := []byte(`{"digest":"sha256:blob","by":"` + winner + `"}`)
	if err := c.Put(ctx, chainID, want); err != nil {
		t.Fatal(err)
	}
	if v := <-got; string(v) != string(want) {
		t.Errorf("loser got %q, want %q", v, want)
	}
	// A value that already exists is returned at once.
	if v, err := c.Wait(ctx, chainID); err != nil || string(v) != string(want) {
		t.Errorf("Wait after Put: %q %v", v, err)
	}
	if err := c.Release(ctx, chainID, winner); err != nil {
		t.Fatal(err)
	}
	if won, err := c.Claim(ctx, chainID, loser, time.Minute); err != nil || !won {
		t.Errorf("claim after release: won=%v err=%v", won, err)
	}
}

func TestChainStaleClaimExpires(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	now := time.Now()
	c.now = func() time.Time { return now }
	if won, _ := c.Claim(ctx, chainID, "dead-worker", time.Minute); !won {
		t.Fatal("first claim lost")
	}
	if won, _ := c.Claim(ctx, chainID, "other", time.Minute); won {
		t.Fatal("live claim taken over")
	}
	if won, _ := c.Claim(ctx, chainID, "dead-worker", time.Minute); !won {
		t.Fatal("owner could not renew its claim")
	}
	now = now.Add(2 * time.Minute)
	if won, err := c.Claim(ctx, chainID, "other", time.Minute); err != nil || !won {
		t.Fatalf("stale claim not taken over: won=%v err=%v", won, err)
	}
	// Release by a former owner must not drop the new owner's claim.
	if err := c.Release(ctx, chainID, "dead-worker"); err != nil {
		t.Fatal(err)
	}
	if won, _ := c.Claim(ctx, chainID, "third", time.Minute); won {
		t.Fatal("stale owner's release dropped the current claim")
	}
}

func TestChainWaitHonoursContext(t *testing.T) {
	q, _ := openQueue(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := q.Chains().Wait(ctx, chainID); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
	if _, err := q.Chains().Claim(ctx, "not-a-digest", "a", time.Minute); err == nil || !strings.Contains(err.Error(), "not-a-digest") {
		t.Errorf("bad chainID: err = %v", err)
	}
}

func TestChainAcquire(t *testing.T) {
	q, _ := openQueue(t)
	ctx := ctxT(t)
	c := q.Chains()
	const ttl = 400 * time.Millisecond

	// A dead winner: its claim expires and the next worker builds.
	if _, won, err := c.Acquire(ctx, chainID, "dies", ttl); err != nil || !won {
		t.Fatalf("first acquire: won=%v err=%v", won, err)
	}
	v, won, err := c.Acquire(ctx, chainID, "survivor", ttl)
	if err != nil || !won || v != nil {
		t.Fatalf("after the dead winner's ttl: value=%q won=%v err=%v, want the claim", v, won, err)
	}

	// A live winner (renewed for long enough not to depend on timing): the
	// waiter gets its value without building.
	if won, err := c.Claim(ctx, chainID, "survivor", time.Minute); err != nil || !won {
		t.Fatalf("renewal: won=%v err=%v", won, err)
	}
	got := make(chan []byte, 1)
	go func() {
		v, won, err := c.Acquire(ctx, chainID, "waiter", ttl)
		if err != nil || won {
			t.Errorf("waiter: won=%v err=%v", won, err)
		}
		got <- v
	}()
	time.Sleep(100 * time.Millisecond)
	if err := c.Put(ctx, chainID, []byte("blob")); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, chainID, "survivor"); err != nil {
		t.Fatal(err)
	}
	if v := <-got; string(v) != "blob" {
		t.Errorf("waiter got %q", v)
	}
	if v, won, err := c.Acquire(ctx, chainID, "late", ttl); err != nil || won || string(v) != "blob" {
		t.Errorf("late acquire: %q won=%v err=%v", v, won, err)
	}
}
