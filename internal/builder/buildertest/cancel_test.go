package buildertest

import (
	"bytes"
	"context"
	"io"
	"testing"
)

func TestCancelAfter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := CancelAfter(bytes.NewReader(make([]byte, 100)), 30, 10, cancel)
	p := make([]byte, 64)
	read := 0
	for ctx.Err() == nil {
		n, err := r.Read(p)
		if n > 10 {
			t.Fatalf("Read handed out %d bytes, chunk is 10", n)
		}
		if err == io.EOF {
			t.Fatal("reached EOF without cancelling")
		}
		read += n
	}
	// The Read after the 30th byte cancels (and still reads its chunk).
	if read != 40 {
		t.Fatalf("cancelled after %d bytes, want 40", read)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}
