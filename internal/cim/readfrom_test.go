package cim

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// Data copied with io.Copy/io.CopyN (Writer.ReadFrom, straight into the
// region buffers) gives the same CIM, byte for byte, as Write, including
// leading zeros left as a hole, all-zero files, small files and reads of
// odd sizes; the declared size is enforced the same way.
func TestReadFromMatchesWrite(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10>>4) // spans several 1 MiB buffers with the others
	files := map[string][]byte{
		"a/big.bin":       big,
		"a/zeros-then":    append(make([]byte, 200<<10), big[:3<<20>>4]...),
		"a/all-zero":      make([]byte, 128<<10),
		"a/small.txt":     []byte("small"),
		"a/empty":         nil,
		"b/odd-boundary":  bytes.Repeat([]byte{7}, 1<<20+3),
		"b/zero-tail.bin": append(append([]byte{}, big[:5000]...), make([]byte, 70<<10)...),
	}
	names := []string{"a/big.bin", "a/zeros-then", "a/all-zero", "a/small.txt", "a/empty", "b/odd-boundary", "b/zero-tail.bin"}
	build := func(dir string, copyData bool) {
		w, err := Create(dir, "c", WithRegionSetID(smallID))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{"a", "b"} {
			if err := w.AddFile(d, dirInfo(sdA), 0); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range names {
			data := files[n]
			if !copyData {
				mustAddFile(t, w, n, fileInfo(0, sdA), data)
				continue
			}
			if err := w.AddFile(n, fileInfo(0, sdA), int64(len(data))); err != nil {
				t.Fatal(err)
			}
			// Odd read sizes, as a tar reader gives.
			r := iotest.HalfReader(bytes.NewReader(data))
			if got, err := io.CopyN(w, r, int64(len(data))); err != nil || got != int64(len(data)) {
				t.Fatalf("CopyN %s: %d, %v", n, got, err)
			}
		}
		mustCommit(t, w)
	}
	a, b := t.TempDir(), t.TempDir()
	build(a, false)
	build(b, true)
	ents, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		x, _ := os.ReadFile(filepath.Join(a, e.Name()))
		y, err := os.ReadFile(filepath.Join(b, e.Name()))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between Write and ReadFrom (%v)", e.Name(), err)
		}
	}

	// More data than declared fails like Write; less is a short copy.
	w, err := Create(t.TempDir(), "d")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.AddFile("f", fileInfo(0, sdA), 4); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, strings.NewReader("12345")); err == nil || !strings.Contains(err.Error(), "past declared size") {
		t.Fatalf("copy past the declared size: %v", err)
	}
}

// lenRecorder records the size of every buffer it is asked to fill.
type lenRecorder struct {
	r    io.Reader
	lens []int
}

func (l *lenRecorder) Read(p []byte) (int, error) {
	l.lens = append(l.lens, len(p))
	return l.r.Read(p)
}

// TestReadFromCopiesOnlyTheFirstPieceThroughScratch: a stream that begins
// with data is read through the scratch buffer (a second copy) only until it
// begins; a stream of leading zeros keeps using the whole scratch buffer.
func TestReadFromCopiesOnlyTheFirstPieceThroughScratch(t *testing.T) {
	tests := []struct {
		name      string
		data      []byte
		wantFirst int // the first read's buffer
		minSecond int // the second read's buffer at least
	}{
		{"data at once", bytes.Repeat([]byte("MZ"), 20<<10), firstPiece, 32 << 10},
		{"zeros first", append(make([]byte, 64<<10), 1), firstPiece, 32 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Create(t.TempDir(), "c")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if err := w.AddFile("f", fileInfo(0, nil), int64(len(tc.data))); err != nil {
				t.Fatal(err)
			}
			rec := &lenRecorder{r: bytes.NewReader(tc.data)}
			if n, err := w.ReadFrom(rec); err != nil || n != int64(len(tc.data)) {
				t.Fatalf("ReadFrom = %d, %v", n, err)
			}
			if len(rec.lens) < 2 || rec.lens[0] != tc.wantFirst || rec.lens[1] < tc.minSecond {
				t.Errorf("read buffer sizes %v; want %d first, then at least %d", rec.lens, tc.wantFirst, tc.minSecond)
			}
		})
	}
}
