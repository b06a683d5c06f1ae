package cim

import (
	"strings"
	"testing"
)

type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("disk driver bug") }

// A panic of the underlying writer on the writing goroutine is the
// writer's error, not a crash of the process.
func TestAsyncWriterPanicIsAnError(t *testing.T) {
	a := newAsyncWriter(panicWriter{}, 8, 2)
	defer a.Close()
	if _, err := a.Write([]byte("0123456789abcdef")); err != nil && !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("write: %v", err)
	}
	if err := a.Flush(); err == nil || !strings.Contains(err.Error(), "disk driver bug") {
		t.Fatalf("flush: %v, want the panic as an error", err)
	}
}
