package hive

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// failingWriterAt keeps what it is given until its budget of calls runs out,
// then fails or panics.
type failingWriterAt struct {
	mu    sync.Mutex
	calls int
	after int
	panic bool
}

var errDiskFull = errors.New("disk full")

func (f *failingWriterAt) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.after {
		return len(p), nil
	}
	if f.panic {
		panic("device gone")
	}
	return 0, errDiskFull
}

// bigTree is a hive several stream windows large, so writing it flushes
// and patches through the asynchronous writer.
func bigTree() *Key {
	root := key("ROOT")
	for i := 0; i < 12; i++ {
		k := key(fmt.Sprintf("Group%02d", i))
		for j := 0; j < 300; j++ {
			k.Subkeys = append(k.Subkeys, key(fmt.Sprintf("Item%04d", j),
				val("blob", RegBinary, bytes.Repeat([]byte{byte(i), byte(j)}, 800+j))))
		}
		root.Subkeys = append(root.Subkeys, k)
	}
	return root
}

// TestWriteAtReportsWriteFailures: a failing or panicking destination is
// WriteAt's error, whichever write it hits (the first window, a later one,
// a patch), and never a crash or a hang.
func TestWriteAtReportsWriteFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after int
		panic bool
		want  string
	}{
		{"first write fails", 0, false, "disk full"},
		{"a later write fails", 2, false, "disk full"},
		{"first write panics", 0, true, "panic: device gone"},
		{"a later write panics", 3, true, "panic: device gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := &failingWriterAt{after: tc.after, panic: tc.panic}
			_, err := WriteAt(out, bigTree())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WriteAt: got %v, want an error with %q", err, tc.want)
			}
			if out.calls <= tc.after {
				t.Fatalf("only %d writes happened; the failure at write %d was never reached", out.calls, tc.after+1)
			}
		})
	}
}

// TestWriteAtStopsOnTreeErrors: a tree error found after windows were
// flushed is returned as is, and the writes queued before it finish (the
// asynchronous writer is closed on every path).
func TestWriteAtStopsOnTreeErrors(t *testing.T) {
	root := bigTree()
	last := root.Subkeys[len(root.Subkeys)-1]
	last.Subkeys = append(last.Subkeys, key("ITEM0000")) // same name as Item0000, another case
	out := &failingWriterAt{after: 1 << 30}
	_, err := WriteAt(out, root)
	if err == nil || !strings.Contains(err.Error(), "two subkeys named") {
		t.Fatalf("got %v, want the duplicate subkey error", err)
	}
	if out.calls == 0 {
		t.Fatal("nothing was flushed before the error; the tree is too small to test this")
	}
}
