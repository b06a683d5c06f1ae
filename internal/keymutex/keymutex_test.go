package keymutex

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// The race detector fails this test unless Lock serialises the callers of
// one key.
func TestLockSerialisesPerKeyAndDropsKeys(t *testing.T) {
	var k Mutex
	keys := []string{"a", "b", "c"}
	var counts [3]int // counts[i] is guarded by keys[i]'s mutex only
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			unlock := k.Lock(keys[i%3])
			defer unlock()
			counts[i%3]++
		})
	}
	wg.Wait()
	if counts != [3]int{100, 100, 100} {
		t.Fatalf("counts %v, want 100 each", counts)
	}
	if n := k.Len(); n != 0 {
		t.Fatalf("%d keys left after every lock was released", n)
	}
}

func TestDifferentKeysDoNotBlock(t *testing.T) {
	var k Mutex
	unlockA := k.Lock("a")
	unlockB := k.Lock("b") // would deadlock if keys shared a mutex
	if n := k.Len(); n != 2 {
		t.Fatalf("Len = %d with two keys held, want 2", n)
	}
	unlockA()
	unlockB()
	if n := k.Len(); n != 0 {
		t.Fatalf("Len = %d after release, want 0", n)
	}
}

func TestTryLockAndLockContext(t *testing.T) {
	var k Mutex
	unlock, ok := k.TryLock("a")
	if !ok {
		t.Fatal("TryLock of a free key failed")
	}
	if _, ok := k.TryLock("a"); ok {
		t.Fatal("TryLock took a key that is held")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := k.LockContext(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("LockContext of a held key with an ended context: %v, want context.Canceled", err)
	}
	got := make(chan func())
	go func() {
		u, err := k.LockContext(context.Background(), "a")
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	unlock()
	(<-got)() // the waiter got the key once it was released
	if n := k.Len(); n != 0 {
		t.Fatalf("Len = %d after every lock was released or given up, want 0", n)
	}
}
