package keymutex

import "sync"

// Mutex hands out one mutex per key. The zero value is ready to use; a Mutex
// must not be copied after first use.
type Mutex struct {
	mu    sync.Mutex
	locks map[string]*lock
}

type lock struct {
	sync.Mutex
	refs int // holders and waiters (under Mutex.mu)
}

// Lock takes key's mutex, waiting while another caller holds it, and returns
// the function that releases it. The key's mutex is dropped when its last
// holder or waiter releases it.
func (k *Mutex) Lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*lock{}
	}
	l, ok := k.locks[key]
	if !ok {
		l = &lock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// Len is the number of keys whose mutex is held or waited for.
func (k *Mutex) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.locks)
}
