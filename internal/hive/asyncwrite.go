package hive

import (
	"fmt"
	"io"
)

// asyncWriter does WriteAt's writes to out on its own goroutine, in the order
// they were asked for, so a large hive's pwrite calls overlap with encoding
// the next cells instead of adding to them. The writer flushes whole windows
// through it and gets an emptied window back; bytes patched after their
// window left (put below the flush point) are copied and queued behind it,
// so a patch always lands after the bytes it patches.
type asyncWriter struct {
	ops  chan writeOp
	free chan []byte // windows written out, ready to be refilled
	done chan struct{}
	err  error // the first write error (or panic); read after done
	n    int   // windows made so far, the writer's first buf included
}

type writeOp struct {
	b      []byte
	off    int64
	window bool // return b to free once written
}

// windows is how many streamWindow buffers a writer may have: the one being
// filled and the ones queued or being written.
const windows = 2

func newAsyncWriter(out io.WriterAt) *asyncWriter {
	a := &asyncWriter{
		ops:  make(chan writeOp, 64),
		free: make(chan []byte, windows),
		done: make(chan struct{}),
		n:    1,
	}
	go a.run(out)
	return a
}

func (a *asyncWriter) run(out io.WriterAt) {
	defer close(a.done)
	defer func() {
		if r := recover(); r != nil && a.err == nil {
			a.err = fmt.Errorf("write hive: panic: %v", r)
		}
		for op := range a.ops { // keep draining so senders never block
			if op.window {
				a.free <- op.b[:0]
			}
		}
	}()
	for op := range a.ops {
		if a.err == nil {
			if _, err := out.WriteAt(op.b, op.off); err != nil {
				a.err = err
			}
		}
		if op.window {
			a.free <- op.b[:0]
		}
	}
}

// window queues buf (file offset off) and returns an empty buffer to fill
// next: a new one while fewer than windows exist, else the first one the
// goroutine is done with.
func (a *asyncWriter) window(buf []byte, off int) []byte {
	a.ops <- writeOp{b: buf, off: int64(off), window: true}
	if a.n < windows {
		a.n++
		return make([]byte, 0, cap(buf))
	}
	return <-a.free
}

// patch queues a copy of b for file offset off.
func (a *asyncWriter) patch(b []byte, off int) {
	a.ops <- writeOp{b: append([]byte(nil), b...), off: int64(off)}
}

// close waits for every queued write and returns the first error.
func (a *asyncWriter) close() error {
	close(a.ops)
	<-a.done
	return a.err
}
