package cim

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// stageEntry is one call of a layer: a directory, a file or an alternate
// stream, with its data.
type stageEntry struct {
	path, stream string
	dir          bool
	info         *FileInfo
	data         []byte
}

func leadingZeros(zeros, n int) []byte {
	b := make([]byte, zeros+n)
	for i := zeros; i < len(b); i++ {
		b[i] = byte(i*7 + 1)
	}
	return b
}

// stageLayers are a base image and a child covering every region and sparse
// rule: small and page-sized files, all-zero files (small and large), long
// leading zeros (a hole), empty files and alternate streams.
func stageLayers() [][]stageEntry {
	return [][]stageEntry{
		{
			{path: "Files", dir: true, info: dirInfo(sdA)},
			{path: "Files/small.txt", info: fileInfo(0, sdA), data: []byte("small")},
			{path: "Files/page.bin", info: fileInfo(0, sdB), data: bytes.Repeat([]byte("P"), pageSize+3)},
			{path: "Files/zero-small", info: fileInfo(0, sdA), data: make([]byte, 100)},
			{path: "Files/zero-big", info: fileInfo(0, sdA), data: make([]byte, 300<<10)},
			{path: "Files/hole.bin", info: fileInfo(0, sdA), data: leadingZeros(200<<10, 5000)},
			{path: "Files/empty", info: fileInfo(0, nil)},
			{path: "Files/small.txt", stream: "ads", data: []byte("stream data")},
			{path: "Files/page.bin", stream: "big", data: bytes.Repeat([]byte("S"), 3*pageSize)},
			{path: "Files/odd.txt", info: fileInfo(0, sdB), data: []byte("odd length!")},
		},
		{
			{path: "Files/child.txt", info: fileInfo(0, sdB), data: []byte("child")},
			{path: "Files/small.txt", info: fileInfo(0, sdB), data: bytes.Repeat([]byte("n"), 5*pageSize+1)},
			{path: "Files/sub", dir: true, info: dirInfo(sdB)},
			{path: "Files/sub/zero", info: fileInfo(0, sdB), data: make([]byte, 9000)},
			{path: "Files/page.bin", stream: "big", data: []byte("replaced")},
		},
	}
}

// tail is written by the ordinary path after the staged entries (as a
// builder writes base-layer files at the end).
var tail = stageEntry{path: "layout", info: fileInfo(0x80, nil), data: []byte("vhd-with-hives\n")}

func writeSequential(t *testing.T, w *Writer, es []stageEntry) {
	t.Helper()
	for _, e := range es {
		switch {
		case e.dir:
			if err := w.AddFile(e.path, e.info, 0); err != nil {
				t.Fatal(err)
			}
		case e.stream != "":
			mustAddStream(t, w, e.path, e.stream, e.data)
		default:
			mustAddFile(t, w, e.path, e.info, e.data)
		}
	}
}

func stageAll(t *testing.T, s *Stager, es []stageEntry) []StagedStream {
	t.Helper()
	out := make([]StagedStream, len(es))
	for i, e := range es {
		if e.dir {
			continue
		}
		ss, err := s.AddStream(bytes.NewReader(e.data), int64(len(e.data)))
		if err != nil {
			t.Errorf("AddStream(%s): %v", e.path, err)
			continue
		}
		if ss.Size() != int64(len(e.data)) {
			t.Errorf("%s: staged size %d, want %d", e.path, ss.Size(), len(e.data))
		}
		out[i] = ss
	}
	return out
}

func replayStaged(t *testing.T, w *Writer, es []stageEntry, staged []StagedStream) {
	t.Helper()
	for i, e := range es {
		var err error
		switch {
		case e.dir:
			err = w.AddFile(e.path, e.info, 0)
		case e.stream != "":
			err = w.AddAlternateStreamStaged(e.path, e.stream, staged[i])
		default:
			err = w.AddFileStaged(e.path, e.info, staged[i])
		}
		if err != nil {
			t.Fatalf("%s: %v", e.path, err)
		}
	}
}

func filesIn(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// TestStagedChainByteIdentical stages both images' data concurrently before
// the base exists, then builds base and child from the staged data; every
// file must equal the sequential writer's, and the files read back.
func TestStagedChainByteIdentical(t *testing.T) {
	layers := stageLayers()
	ids := []GUID{{0xa1}, {0xb2}}
	seqDir, stDir := t.TempDir(), t.TempDir()

	for i, es := range layers {
		var w *Writer
		var err error
		if i == 0 {
			w, err = Create(seqDir, "l0", WithRegionSetID(ids[0]))
		} else {
			w, err = CreateForked(seqDir, "l1", "l0", WithRegionSetID(ids[1]))
		}
		if err != nil {
			t.Fatal(err)
		}
		writeSequential(t, w, es)
		if i == 0 {
			writeSequential(t, w, []stageEntry{tail})
		}
		mustCommit(t, w)
	}

	stagers := make([]*Stager, len(layers))
	staged := make([][]StagedStream, len(layers))
	var wg sync.WaitGroup
	for i := range layers {
		s, err := Stage(stDir, ids[i], RegionsPerImage*i)
		if err != nil {
			t.Fatal(err)
		}
		stagers[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			staged[i] = stageAll(t, s, layers[i])
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if ents, _ := os.ReadDir(stDir); len(ents) != 2*len(layers) {
		t.Fatalf("staging wrote %d files, want %d temporary region files", len(ents), 2*len(layers))
	}
	for i, es := range layers {
		var w *Writer
		var err error
		if i == 0 {
			w, err = Create(stDir, "l0", WithStaged(stagers[0]))
		} else {
			w, err = CreateForked(stDir, "l1", "l0", WithStaged(stagers[1]))
		}
		if err != nil {
			t.Fatal(err)
		}
		replayStaged(t, w, es, staged[i])
		if i == 0 {
			writeSequential(t, w, []stageEntry{tail})
		}
		mustCommit(t, w)
		if err := stagers[i].Close(); err != nil {
			t.Fatalf("Close after adoption: %v", err)
		}
	}

	want, got := filesIn(t, seqDir), filesIn(t, stDir)
	if len(want) != 2*7 || len(got) != len(want) {
		t.Fatalf("file sets: sequential %d, staged %d", len(want), len(got))
	}
	for name, b := range want {
		if !bytes.Equal(b, got[name]) {
			t.Errorf("%s differs between sequential and staged writes (%d vs %d bytes)", name, len(b), len(got[name]))
		}
	}

	// Round trip: the child shows its own data and the base's.
	im := mustOpen(t, filepath.Join(stDir, "l1.cim"))
	for p, data := range map[string][]byte{
		"Files/small.txt":  layers[1][1].data,
		"Files/hole.bin":   layers[0][5].data,
		"Files/zero-big":   layers[0][4].data,
		"Files/sub/zero":   layers[1][3].data,
		"Files/page.bin":   layers[0][2].data,
		"Files/child.txt":  layers[1][0].data,
		"layout":           tail.data,
		"Files/empty":      nil,
		"Files/odd.txt":    layers[0][9].data,
		"Files/zero-small": layers[0][3].data,
	} {
		r, err := im.Open(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if b := readAll(t, r); !bytes.Equal(b, data) {
			t.Errorf("%s: read %d bytes, want %d", p, len(b), len(data))
		}
	}
}

func TestStagedZeroStreamsAreSparse(t *testing.T) {
	tests := []struct {
		name       string
		data       []byte
		wantSparse bool
	}{
		{"small zeros", make([]byte, 10), true},
		{"big zeros", make([]byte, 1<<20), true},
		{"empty", nil, false},
		{"zeros then data", leadingZeros(70<<10, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Stage(dir, GUID{7}, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			flush := func() {
				for _, r := range []*regionWriter{s.w.data, s.w.small} {
					if err := r.bw.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			flush()
			before := regionFileBytes(t, dir)
			ss, err := s.AddStream(bytes.NewReader(tt.data), int64(len(tt.data)))
			if err != nil {
				t.Fatal(err)
			}
			if ss.Sparse() != tt.wantSparse || ss.Size() != int64(len(tt.data)) {
				t.Fatalf("sparse=%v size=%d, want sparse=%v size=%d", ss.Sparse(), ss.Size(), tt.wantSparse, len(tt.data))
			}
			if tt.wantSparse {
				flush()
				if after := regionFileBytes(t, dir); after != before {
					t.Errorf("an all-zero stream grew the region files from %d to %d bytes", before, after)
				}
			}
		})
	}
}

// regionFileBytes is the size of every file in dir.
func regionFileBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

func TestStagerRefusals(t *testing.T) {
	parentDir := t.TempDir()
	w, err := Create(parentDir, "p", WithRegionSetID(GUID{1}))
	if err != nil {
		t.Fatal(err)
	}
	mustAddFile(t, w, "a", fileInfo(0, nil), []byte("a"))
	mustCommit(t, w)

	tests := []struct {
		name   string
		base   int
		create func(dir string, s *Stager) (*Writer, error)
		want   string
	}{
		{"base CIM with data staged for depth 1", 3, func(dir string, s *Stager) (*Writer, error) {
			return Create(dir, "c", WithStaged(s))
		}, "start at 0"},
		{"forked CIM with data staged for depth 0", 0, func(dir string, s *Stager) (*Writer, error) {
			return CreateForked(dir, "c", "p", WithStaged(s))
		}, "start at 3"},
		{"other region-set ID", 0, func(dir string, s *Stager) (*Writer, error) {
			return Create(dir, "c", WithStaged(s), WithRegionSetID(GUID{9}))
		}, "not"},
		{"other version", 0, func(dir string, s *Stager) (*Writer, error) {
			return Create(dir, "c", WithStaged(s), WithVersion(2, 0))
		}, "format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"p.cim", "region_" + GUID{1}.String() + "_0", "region_" + GUID{1}.String() + "_1", "region_" + GUID{1}.String() + "_2"} {
				b, err := os.ReadFile(filepath.Join(parentDir, f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s, err := Stage(dir, GUID{5}, tt.base)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.AddStream(strings.NewReader("data"), 4); err != nil {
				t.Fatal(err)
			}
			before := tempFiles(t, dir)
			if _, err := tt.create(dir, s); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want a refusal mentioning %q", err, tt.want)
			}
			if after := tempFiles(t, dir); strings.Join(after, ",") != strings.Join(before, ",") || len(after) != 2 {
				t.Fatalf("refused adoption changed staged files: %v -> %v", before, after)
			}
			if _, err := s.AddStream(strings.NewReader("more"), 4); err != nil {
				t.Fatalf("stager unusable after a refused adoption: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if left := tempFiles(t, dir); len(left) != 0 {
				t.Fatalf("Close left %v", left)
			}
		})
	}
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func TestStagerErrors(t *testing.T) {
	t.Run("bad base", func(t *testing.T) {
		for _, base := range []int{-3, 1, maxRegions} {
			if _, err := Stage(t.TempDir(), GUID{1}, base); err == nil {
				t.Errorf("Stage(base=%d) accepted", base)
			}
		}
	})
	t.Run("short reader is sticky and refused by the writer", func(t *testing.T) {
		dir := t.TempDir()
		s, err := Stage(dir, GUID{1}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddStream(strings.NewReader("abc"), 10); !errors.Is(err, io.EOF) {
			t.Fatalf("short stream: err = %v, want io.EOF", err)
		}
		if _, err := s.AddStream(strings.NewReader("abc"), 3); err == nil {
			t.Fatal("stager accepted a stream after a failed one")
		}
		if _, err := Create(dir, "c", WithStaged(s)); err == nil {
			t.Fatal("writer adopted a failed stager")
		}
		s.Close()
		if left := tempFiles(t, dir); len(left) != 0 {
			t.Fatalf("Close left %v", left)
		}
	})
	t.Run("stream of another stager", func(t *testing.T) {
		dir := t.TempDir()
		s1, _ := Stage(dir, GUID{1}, 0)
		s2, _ := Stage(dir, GUID{2}, 0)
		defer s2.Close()
		ss, err := s2.AddStream(strings.NewReader("x"), 1)
		if err != nil {
			t.Fatal(err)
		}
		w, err := Create(dir, "c", WithStaged(s1))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if err := w.AddFileStaged("f", fileInfo(0, nil), ss); err == nil {
			t.Fatal("AddFileStaged accepted a stream of another stager")
		}
		if err := w.AddFileStaged("d", dirInfo(nil), ss); err == nil {
			t.Fatal("AddFileStaged accepted a directory")
		}
		if _, err := s1.AddStream(strings.NewReader("x"), 1); err == nil {
			t.Fatal("an adopted stager accepted a stream")
		}
		// Closing an unadopted writer removes the adopted files.
		w.Close()
		if left := tempFiles(t, dir); len(left) != 2 { // s2's
			t.Fatalf("after Close: %v", left)
		}
	})
}
