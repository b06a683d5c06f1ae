package readcount

import (
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

type report struct{ total, delta int64 }

func read(t *testing.T, every int64, data string, chunk int, readAll bool) []report {
	t.Helper()
	var got []report
	r := New(io.NopCloser(iotest.HalfReader(strings.NewReader(data))), every, func(total, delta int64) {
		got = append(got, report{total, delta})
	})
	p := make([]byte, chunk)
	for {
		_, err := r.Read(p)
		if err != nil || !readAll {
			break
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestEveryRead(t *testing.T) {
	// HalfReader: 2 bytes, 2 bytes, then the 0-byte io.EOF read.
	got := read(t, 0, "abcd", 4, true)
	want := []report{{2, 2}, {4, 2}, {4, 0}}
	if !slices.Equal(got, want) {
		t.Fatalf("reports %v, want %v", got, want)
	}
}

func TestThrottledWithEOFAndClose(t *testing.T) {
	got := read(t, 4, strings.Repeat("x", 10), 4, true)
	want := []report{{4, 4}, {8, 4}, {10, 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("reports %v, want %v", got, want)
	}
	// Closed early: the rest is reported by Close.
	got = read(t, 100, strings.Repeat("x", 10), 8, false)
	if want := []report{{4, 4}}; !slices.Equal(got, want) {
		t.Fatalf("reports on an early Close %v, want %v", got, want)
	}
}
