package hive

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeBoth writes root with Marshal (all in memory, on one goroutine) and
// with WriteAt to a file (a 4 MiB window, flushed and patched through the
// asynchronous writer), and fails unless both give the same bytes or the
// same error.
// It reports whether the tree was written (false: both failed alike).
func writeBoth(t *testing.T, name string, root func() (*Key, error), opts ...WriteOption) bool {
	t.Helper()
	r1, err1 := root()
	var want []byte
	if err1 == nil {
		want, err1 = Marshal(r1, opts...)
	}
	r2, err2 := root()
	var got []byte
	if err2 == nil {
		f, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var n int64
		if n, err2 = WriteAt(f, r2, opts...); err2 == nil {
			if got, err = os.ReadFile(f.Name()); err != nil {
				t.Fatal(err)
			}
			if n != int64(len(got)) {
				t.Errorf("%s: WriteAt reported %d bytes, wrote %d", name, n, len(got))
			}
		}
	}
	switch {
	case (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()):
		t.Errorf("%s: Marshal error %v, WriteAt error %v", name, err1, err2)
	case err1 == nil && !bytes.Equal(got, want):
		t.Errorf("%s: WriteAt wrote %d bytes, Marshal %d, not the same", name, len(got), len(want))
	}
	return err1 == nil
}

// TestStreamingWriterMatchesMarshalOnFixtures: every real fixture hive,
// rewritten from its file and merged with the real delta, gives Marshal's
// bytes, or Marshal's error for the damaged ones.
func TestStreamingWriterMatchesMarshalOnFixtures(t *testing.T) {
	dir := fixtureDir(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	delta := readFixture(t, "System_Delta")
	n := 0
	for _, e := range entries {
		if e.IsDir() || strings.HasSuffix(e.Name(), ".md") {
			continue
		}
		b := readFixture(t, e.Name())
		open := func() (*Key, error) { return openRoot(Input{Name: e.Name(), Data: b}) }
		var opts []WriteOption
		if h, err := Open(b); err == nil && h.layered {
			opts = append(opts, WithLayered())
		}
		writeBoth(t, e.Name(), open, opts...)
		merged := func() (*Key, error) {
			m, _, err := mergeInputs(context.Background(), Input{Name: e.Name(), Data: b}, []Input{{Name: "System_Delta", Data: delta}}, nil)
			return m, err
		}
		writeBoth(t, e.Name()+" + System_Delta", merged)
		n++
	}
	if n < 15 {
		t.Fatalf("only %d fixture hives found", n)
	}
}

// TestStreamingWriterMatchesMarshalOnCorruptions: a hive damaged at many
// places is written alike by both paths: the same bytes, or the same error.
func TestStreamingWriterMatchesMarshalOnCorruptions(t *testing.T) {
	good := readFixture(t, "ManySubkeysHive")
	written, failed := 0, 0
	for off := headerSize; off < len(good); off += 1999 {
		b := bytes.Clone(good)
		b[off] ^= 0x5a
		open := func() (*Key, error) { return openRoot(Input{Name: "ManySubkeysHive", Data: b}) }
		if writeBoth(t, fmt.Sprintf("ManySubkeysHive damaged at %d", off), open) {
			written++
		} else {
			failed++
		}
	}
	if written == 0 || failed == 0 {
		t.Fatalf("%d damaged hives written, %d refused: the test needs both", written, failed)
	}
	t.Logf("%d damaged hives written alike, %d refused alike", written, failed)
}
