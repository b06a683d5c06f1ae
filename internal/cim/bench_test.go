package cim

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// genLayer feeds a deterministic tree to w: files spread over 200
// directories, 70% small (< 4 KiB), 30% larger (up to ~80 KiB), content sliced
// from one pseudo-random buffer so generation costs nothing. It returns the
// bytes of file data written.
func genLayer(tb testing.TB, w *Writer, files int) int64 {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	var total int64
	for d := 0; d < 200; d++ {
		if err := w.AddFile(fmt.Sprintf("Files/dir%03d", d), dirInfo(sdA), 0); err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < files; i++ {
		size := 100 + rng.IntN(3900)
		if rng.IntN(10) < 3 {
			size = 4096 + rng.IntN(80000)
		}
		p := fmt.Sprintf("Files/dir%03d/file%06d.dll", i%200, i)
		if err := w.AddFile(p, fileInfo(AttrArchive, sdB), int64(size)); err != nil {
			tb.Fatal(err)
		}
		off := rng.IntN(len(buf) - size)
		if _, err := w.Write(buf[off : off+size]); err != nil {
			tb.Fatal(err)
		}
		total += int64(size)
	}
	return total
}

// BenchmarkWriter builds a 20,000-file CIM (about 270 MiB of data); the
// reported MB/s is file data per second.
func BenchmarkWriter(b *testing.B) {
	var bytes int64
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		w, err := Create(dir, "bench", WithRegionSetID(GUID{1}))
		if err != nil {
			b.Fatal(err)
		}
		if err := w.AddFile("Files", dirInfo(sdA), 0); err != nil {
			b.Fatal(err)
		}
		bytes = genLayer(b, w, 20000)
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(bytes)
}

// BenchmarkManyFilesOneDir adds 200,000 empty files to one directory and
// reports the heap held per file just before Commit.
func BenchmarkManyFilesOneDir(b *testing.B) {
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		w, err := Create(dir, "many", WithRegionSetID(GUID{2}))
		if err != nil {
			b.Fatal(err)
		}
		w.AddFile("d", dirInfo(sdA), 0)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const n = 200000
		for j := 0; j < n; j++ {
			if err := w.AddFile(fmt.Sprintf("d/some-longish-file-name-%07d.txt", j), fileInfo(0, sdB), 0); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heapB/file")
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestManyFilesOneDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("200,000 files")
	}
	dir := t.TempDir()
	w, err := Create(dir, "many")
	if err != nil {
		t.Fatal(err)
	}
	w.AddFile("d", dirInfo(nil), 0)
	const n = 200000
	for j := 0; j < n; j++ {
		if err := w.AddFile(fmt.Sprintf("d/f%07d", j), fileInfo(0, nil), 0); err != nil {
			t.Fatal(err)
		}
	}
	mustCommit(t, w)
	im := mustOpen(t, filepath.Join(dir, "many.cim"))
	ents, err := im.ReadDir("d")
	if err != nil || len(ents) != n {
		t.Fatalf("ReadDir: %d entries, %v", len(ents), err)
	}
	for _, j := range []int{0, 1, 99999, n - 1} {
		if _, err := im.Stat(fmt.Sprintf("D/F%07d", j)); err != nil {
			t.Errorf("lookup %d: %v", j, err)
		}
	}
	info, err := Inspect(filepath.Join(dir, "many.cim"))
	if err != nil || info.Files != n || info.FileTables != (n+2+1023)/1024 {
		t.Errorf("inspect: %+v %v", info, err)
	}
}

// BenchmarkWriterLarge streams CIMBENCH_LARGE_MIB MiB (default: skipped) of
// file data in 64 MiB files and reports the process's peak RSS, to check
// that memory is bounded by metadata, not data.
func BenchmarkWriterLarge(b *testing.B) {
	mib, _ := strconv.Atoi(os.Getenv("CIMBENCH_LARGE_MIB"))
	if mib <= 0 {
		b.Skip("set CIMBENCH_LARGE_MIB")
	}
	buf := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		w, err := Create(dir, "large")
		if err != nil {
			b.Fatal(err)
		}
		for f := 0; f*64 < mib; f++ {
			if err := w.AddFile(fmt.Sprintf("f%d", f), fileInfo(0, nil), 64<<20); err != nil {
				b.Fatal(err)
			}
			for j := 0; j < 64; j++ {
				if _, err := w.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(mib) << 20)
	if rss, ok := peakRSSMiB(); ok {
		b.ReportMetric(rss, "peakRSS-MiB")
	}
}

// BenchmarkFork forks a 100,000-file parent (metadata only is rewritten).
func BenchmarkFork(b *testing.B) {
	dir := b.TempDir()
	w, err := Create(dir, "parent")
	if err != nil {
		b.Fatal(err)
	}
	w.AddFile("Files", dirInfo(sdA), 0)
	for d := 0; d < 100; d++ {
		w.AddFile(fmt.Sprintf("Files/d%03d", d), dirInfo(sdA), 0)
		for f := 0; f < 1000; f++ {
			mustAddFile(b, w, fmt.Sprintf("Files/d%03d/file%04d.dll", d, f), fileInfo(0, sdB), []byte("x"))
		}
	}
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := CreateForked(dir, fmt.Sprintf("child%d", i), "parent")
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}
