package wclayer

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

var errClosed = errors.New("wclayer: reader closed")

// readahead decompresses on its own goroutine, a few chunks ahead of the
// consumer, so gzip inflation overlaps with hashing, tar parsing and the
// caller's work (klauspost's gzip has no concurrency of its own; its zstd
// decoder does). The goroutine owns r until it exits: Close stops it and
// waits for it, so the caller may close what r reads from once Close
// returns (a Read of r in flight when Close is called finishes first). It
// exits by itself at the end of the stream or on an error; a panic in r is
// recovered into the stream's error.
type readahead struct {
	r      io.Reader
	filled chan chunk
	free   chan []byte
	done   chan struct{}
	exited chan struct{}
	once   sync.Once
	cur    []byte // unread part of the current chunk
	curBuf []byte // the current chunk's buffer, returned to free when used
	err    error
}

type chunk struct {
	data, buf []byte
	err       error
}

func newReadahead(r io.Reader, size, depth int) *readahead {
	ra := &readahead{
		r:      r,
		filled: make(chan chunk, depth),
		free:   make(chan []byte, depth+1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	for i := 0; i < depth+1; i++ {
		ra.free <- make([]byte, size)
	}
	go ra.run()
	return ra
}

// errPanic is wrapped by the error of a source that panicked.
var errPanic = errors.New("wclayer: reading the layer panicked")

func (ra *readahead) run() {
	defer close(ra.exited)
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("%w: %v", errPanic, r)
			select {
			case ra.filled <- chunk{err: err}:
			case <-ra.done:
			}
		}
	}()
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.done:
			return
		}
		n, err := 0, error(nil)
		for n < len(buf) && err == nil {
			var m int
			m, err = ra.r.Read(buf[n:])
			n += m
		}
		select {
		case ra.filled <- chunk{data: buf[:n], buf: buf, err: err}:
		case <-ra.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (ra *readahead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.curBuf != nil {
			ra.free <- ra.curBuf // never blocks: free holds every buffer
			ra.curBuf = nil
		}
		if ra.err != nil {
			return 0, ra.err
		}
		select {
		case c := <-ra.filled:
			ra.cur, ra.curBuf, ra.err = c.data, c.buf, c.err
		case <-ra.done:
			ra.err = errClosed
		}
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the goroutine and waits until it no longer touches r.
func (ra *readahead) Close() {
	ra.once.Do(func() { close(ra.done) })
	<-ra.exited
}
