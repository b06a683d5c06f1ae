package wclayer

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
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
//
// With a hash, a second goroutine hashes each chunk
// while the consumer reads it: the hash of an uncompressed layer, the
// slowest part of building it, runs beside the reading and the parsing
// instead of before them. A chunk's buffer is reused once both are done.
type readahead struct {
	r      io.Reader
	filled chan chunk
	free   chan *buffer
	done   chan struct{}
	exited chan struct{}
	once   sync.Once
	cur    []byte  // unread part of the current chunk
	curBuf *buffer // the current chunk's buffer, released when used
	err    error

	hash    hash.Hash  // nil: no hashing goroutine
	toHash  chan chunk // chunks for the hashing goroutine, closed by run
	hashed  chan struct{}
	hashErr error // a panic of the hash, read after hashed is closed
}

// buffer is a chunk's memory; users counts who still reads it (the
// consumer, and the hashing goroutine if any).
type buffer struct {
	b     []byte
	users atomic.Int32
}

type chunk struct {
	data []byte
	buf  *buffer
	err  error
}

// newReadahead starts reading r in chunks of size, depth ahead. With a
// hash h, every byte read is written to h, in order, on a goroutine of its
// own; Sum waits for it.
func newReadahead(r io.Reader, size, depth int, h hash.Hash) *readahead {
	ra := &readahead{
		r:      r,
		filled: make(chan chunk, depth),
		free:   make(chan *buffer, depth+1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
		hash:   h,
	}
	for i := 0; i < depth+1; i++ {
		ra.free <- &buffer{b: make([]byte, size)}
	}
	if h != nil {
		ra.toHash = make(chan chunk, depth)
		ra.hashed = make(chan struct{})
		go ra.hashAll()
	}
	go ra.run()
	return ra
}

// release gives a buffer back when its last user is done with it.
func (ra *readahead) release(b *buffer) {
	if b.users.Add(-1) == 0 {
		ra.free <- b // never blocks: free holds every buffer
	}
}

// hashAll hashes the chunks in order until run closes toHash. After a
// panic of the hash it only releases the rest.
func (ra *readahead) hashAll() {
	defer close(ra.hashed)
	for c := range ra.toHash {
		if ra.hashErr == nil {
			ra.hashErr = ra.hashChunk(c.data)
		}
		ra.release(c.buf)
	}
}

func (ra *readahead) hashChunk(b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("wclayer: hashing the layer panicked: %v", r)
		}
	}()
	ra.hash.Write(b)
	return nil
}

// Sum waits until every chunk read is hashed and returns the hash. It is
// for the end of the stream (after Read returned io.EOF).
func (ra *readahead) Sum() ([]byte, error) {
	<-ra.hashed
	if ra.hashErr != nil {
		return nil, ra.hashErr
	}
	return ra.hash.Sum(nil), nil
}

// errPanic is wrapped by the error of a source that panicked.
var errPanic = errors.New("wclayer: reading the layer panicked")

func (ra *readahead) run() {
	defer close(ra.exited)
	if ra.toHash != nil {
		defer close(ra.toHash)
	}
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
		var buf *buffer
		select {
		case buf = <-ra.free:
		case <-ra.done:
			return
		}
		n, err := 0, error(nil)
		for n < len(buf.b) && err == nil {
			var m int
			m, err = ra.r.Read(buf.b[n:])
			n += m
		}
		c := chunk{data: buf.b[:n], buf: buf, err: err}
		if ra.toHash != nil {
			buf.users.Store(2)
			select {
			case ra.toHash <- c:
			case <-ra.done:
				return
			}
		} else {
			buf.users.Store(1)
		}
		select {
		case ra.filled <- c:
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
			ra.release(ra.curBuf)
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

// Close stops the goroutines and waits until they no longer touch r (or
// the hash).
func (ra *readahead) Close() {
	ra.once.Do(func() { close(ra.done) })
	<-ra.exited
	if ra.hashed != nil {
		<-ra.hashed
	}
}
