package keymutex

import (
	"context"
	"sync"
)

// Mutex hands out one mutex per key. The zero value is ready to use; a Mutex
// must not be copied after first use.
type Mutex struct {
	mu    sync.Mutex
	locks map[string]*lock
}

type lock struct {
	held chan struct{} // holds one token while the key is locked
	refs int           // holders and waiters (under Mutex.mu)
}

// Lock takes key's mutex, waiting while another caller holds it, and returns
// the function that releases it. The key's mutex is dropped when its last
// holder or waiter releases it.
func (k *Mutex) Lock(key string) (unlock func()) {
	unlock, _ = k.LockContext(context.Background(), key)
	return unlock
}

// LockContext is Lock that stops waiting when ctx ends, with ctx's error.
func (k *Mutex) LockContext(ctx context.Context, key string) (unlock func(), err error) {
	l := k.ref(key)
	select {
	case l.held <- struct{}{}:
		return k.unlocker(key, l), nil
	case <-ctx.Done():
		k.unref(key, l)
		return nil, ctx.Err()
	}
}

// TryLock takes key's mutex only if nobody holds it; ok reports whether it
// did.
func (k *Mutex) TryLock(key string) (unlock func(), ok bool) {
	l := k.ref(key)
	select {
	case l.held <- struct{}{}:
		return k.unlocker(key, l), true
	default:
		k.unref(key, l)
		return nil, false
	}
}

func (k *Mutex) ref(key string) *lock {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.locks == nil {
		k.locks = map[string]*lock{}
	}
	l, ok := k.locks[key]
	if !ok {
		l = &lock{held: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	return l
}

func (k *Mutex) unref(key string, l *lock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(k.locks, key)
	}
}

func (k *Mutex) unlocker(key string, l *lock) func() {
	return func() {
		<-l.held
		k.unref(key, l)
	}
}

// Len is the number of keys whose mutex is held or waited for.
func (k *Mutex) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.locks)
}
