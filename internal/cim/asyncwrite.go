package cim

import (
	"fmt"
	"io"
	"sync"
)

// asyncWriter buffers writes and hands full buffers to a goroutine that
// writes them out, so the kernel's copy into the page cache (the largest cost
// of building a CIM from an uncompressed layer) overlaps with hashing and
// parsing the layer. Errors are sticky and reported by the next Write or by
// Flush. It is not safe for concurrent use; Close must be called to stop the
// goroutine.
type asyncWriter struct {
	w    io.Writer
	buf  []byte
	free chan []byte
	full chan []byte
	wg   sync.WaitGroup // buffers handed over and not yet written
	done chan struct{}

	mu  sync.Mutex
	err error

	closeOnce sync.Once
}

func newAsyncWriter(w io.Writer, size, buffers int) *asyncWriter {
	a := &asyncWriter{
		w:    w,
		free: make(chan []byte, buffers),
		full: make(chan []byte, buffers),
		done: make(chan struct{}),
	}
	for i := 1; i < buffers; i++ {
		a.free <- make([]byte, 0, size)
	}
	a.buf = make([]byte, 0, size)
	go a.run()
	return a
}

func (a *asyncWriter) run() {
	defer close(a.done)
	for b := range a.full {
		if a.error() == nil {
			if err := a.write(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
			}
		}
		a.free <- b[:0]
		a.wg.Done()
	}
}

// write writes b; a panic of the underlying writer is the writer's error
// (this goroutine must not crash the process).
func (a *asyncWriter) write(b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cim: writing panicked: %v", r)
		}
	}()
	_, err = a.w.Write(b)
	return err
}

func (a *asyncWriter) error() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// Write copies p into buffers; full buffers are written asynchronously.
func (a *asyncWriter) Write(p []byte) (int, error) {
	if err := a.error(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		k := copy(a.buf[len(a.buf):cap(a.buf)], p)
		a.buf = a.buf[:len(a.buf)+k]
		p = p[k:]
		n += k
		if len(a.buf) == cap(a.buf) {
			a.handOver()
		}
	}
	return n, nil
}

// readFrom reads at most max bytes from r straight into the buffers (no
// intermediate copy), handing full ones over; it stops at max or at r's end
// (io.EOF is not an error).
func (a *asyncWriter) readFrom(r io.Reader, max int64) (int64, error) {
	if err := a.error(); err != nil {
		return 0, err
	}
	var n int64
	for n < max {
		space := a.buf[len(a.buf):cap(a.buf)]
		if int64(len(space)) > max-n {
			space = space[:max-n]
		}
		k, err := r.Read(space)
		a.buf = a.buf[:len(a.buf)+k]
		n += int64(k)
		if len(a.buf) == cap(a.buf) {
			a.handOver()
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (a *asyncWriter) handOver() {
	a.wg.Add(1)
	a.full <- a.buf
	a.buf = <-a.free
}

// Flush writes everything buffered and waits until it is written.
func (a *asyncWriter) Flush() error {
	if len(a.buf) > 0 {
		a.handOver()
	}
	a.wg.Wait()
	return a.error()
}

// Close stops the writing goroutine after what was handed over; buffered
// bytes not yet flushed are dropped (callers Flush first when they matter).
func (a *asyncWriter) Close() {
	a.closeOnce.Do(func() {
		close(a.full)
		<-a.done
	})
}
