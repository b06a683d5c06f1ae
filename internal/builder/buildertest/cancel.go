package buildertest

import (
	"context"
	"io"
)

// CancelAfter returns a layer stream over r that calls cancel on the first
// Read after n bytes were read through it, as a caller giving up mid-layer does. Each Read
// hands out at most chunk bytes (as many as asked for when chunk is 0), so
// that the cancellation lands well inside the stream. Close does nothing.
func CancelAfter(r io.Reader, n, chunk int, cancel context.CancelFunc) io.ReadCloser {
	return &cancelAfter{r: r, n: n, chunk: chunk, cancel: cancel}
}

type cancelAfter struct {
	r      io.Reader
	n      int // bytes left before cancel
	chunk  int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	if c.chunk > 0 && len(p) > c.chunk {
		p = p[:c.chunk]
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

func (c *cancelAfter) Close() error { return nil }
