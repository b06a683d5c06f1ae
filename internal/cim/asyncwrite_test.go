package cim

import (
	"bytes"
	"errors"
	"testing"
)

// failAfter fails every write once n bytes were accepted.
type failAfter struct {
	buf bytes.Buffer
	n   int
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.buf.Len()+len(p) > f.n {
		return 0, errors.New("disk full")
	}
	return f.buf.Write(p)
}

func TestAsyncWriterOrderAndFlush(t *testing.T) {
	var dst bytes.Buffer
	a := newAsyncWriter(&dst, 7, 3)
	defer a.Close()
	var want bytes.Buffer
	for i := 0; i < 100; i++ {
		p := bytes.Repeat([]byte{byte(i)}, i%13)
		want.Write(p)
		if n, err := a.Write(p); err != nil || n != len(p) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes(), want.Bytes()) {
		t.Fatalf("wrote %d bytes out of order or lost, want %d", dst.Len(), want.Len())
	}
	a.Close()
	a.Close() // idempotent
}

func TestAsyncWriterErrorIsSticky(t *testing.T) {
	f := &failAfter{n: 10}
	a := newAsyncWriter(f, 4, 2)
	defer a.Close()
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		_, err = a.Write([]byte("abcd"))
	}
	if ferr := a.Flush(); ferr == nil || ferr.Error() != "disk full" {
		t.Fatalf("Flush = %v, want the write error", ferr)
	}
	if _, err := a.Write([]byte("x")); err == nil {
		t.Fatal("Write after a failed write succeeded")
	}
}
