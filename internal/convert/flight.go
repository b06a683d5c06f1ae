package convert

import "sync"

// flights is the in-process single-flight of layer builds: while one
// conversion of this process builds a layer, the others that need it wait
// for it to be cached and reuse it. (The shared cache's claims do the same
// between processes; they are held per process, so they cannot tell two
// conversions of one process apart.)
type flights struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// claim makes the caller the builder of key (won=true; it must call the
// returned release once the layer is cached or abandoned), or returns a
// channel closed when the current builder releases it.
func (f *flights) claim(key string) (release func(), wait <-chan struct{}, won bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.m[key]; ok {
		return nil, ch, false
	}
	if f.m == nil {
		f.m = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	f.m[key] = ch
	return sync.OnceFunc(func() {
		f.mu.Lock()
		delete(f.m, key)
		f.mu.Unlock()
		close(ch)
	}), nil, true
}
