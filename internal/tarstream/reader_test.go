package tarstream_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/tarstream"
)

// entry is what a caller sees of one tar entry: the header fields tarstream
// promises to match archive/tar on, and the data.
type entry struct {
	Typeflag                        byte
	Name, Linkname                  string
	Size, Mode                      int64
	Uid, Gid                        int
	ModTime, AccessTime, ChangeTime time.Time
	PAX                             map[string]string
	Data                            string
	ReadErr                         string
}

type result struct {
	Entries []entry
	Err     string // of the Next that ended the walk
	Left    int    // bytes of the source not read when it ended
}

type tarReader interface {
	Next() (*tar.Header, error)
	Read([]byte) (int, error)
}

// How a walk reads each entry's data: all of it (up to 64 KiB) in 7-byte reads, none of
// it (Next skips it), or the first 600 bytes with one large read.
const (
	readAll = iota
	readNone
	readSome
	readModes
)

func walk(tr tarReader, src *bytes.Reader, mode int) result {
	var res result
	for range 5000 {
		h, err := tr.Next()
		if err != nil {
			res.Err = err.Error()
			break
		}
		e := entry{
			Typeflag: h.Typeflag, Name: h.Name, Linkname: h.Linkname,
			Size: h.Size, Mode: h.Mode, Uid: h.Uid, Gid: h.Gid,
			ModTime: h.ModTime, AccessTime: h.AccessTime, ChangeTime: h.ChangeTime,
		}
		if len(h.PAXRecords) > 0 {
			e.PAX = maps.Clone(h.PAXRecords)
		}
		var data []byte
		var rerr error
		switch mode {
		case readAll:
			// Capped: a sparse entry's holes may be gigabytes of zeros.
			buf := make([]byte, 7)
			for rerr == nil && len(data) < 1<<16 {
				var n int
				n, rerr = tr.Read(buf)
				data = append(data, buf[:n]...)
			}
		case readSome:
			buf := make([]byte, 600)
			var n int
			n, rerr = tr.Read(buf)
			data = buf[:n]
		}
		e.Data = string(data)
		if rerr != nil && rerr != io.EOF {
			e.ReadErr = rerr.Error()
		}
		res.Entries = append(res.Entries, e)
	}
	res.Left = src.Len()
	return res
}

// compare walks data with both readers in every read mode and fails on any
// difference. It returns whether tarstream parsed everything itself.
func compare(t *testing.T, data []byte) (fast bool) {
	t.Helper()
	fast = true
	for mode := range readModes {
		ws := bytes.NewReader(data)
		want := walk(tar.NewReader(ws), ws, mode)
		gs := bytes.NewReader(data)
		r := tarstream.NewReader(gs)
		got := walk(r, gs, mode)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("read mode %d: tarstream and archive/tar differ\n got: %s\nwant: %s", mode, show(got), show(want))
		}
		fast = fast && !r.HandedOver()
	}
	return fast
}

func show(r result) string {
	var b strings.Builder
	for _, e := range r.Entries {
		fmt.Fprintf(&b, "\n  %q %q->%q size=%d mode=%o uid=%d gid=%d m=%v a=%v c=%v pax=%v data=%d bytes readErr=%q",
			e.Typeflag, e.Name, e.Linkname, e.Size, e.Mode, e.Uid, e.Gid, e.ModTime.UnixNano(), e.AccessTime, e.ChangeTime, e.PAX, len(e.Data), e.ReadErr)
	}
	fmt.Fprintf(&b, "\n  end: %q, %d bytes left", r.Err, r.Left)
	return b.String()
}

type file struct {
	hdr  tar.Header
	data string
}

func build(t testing.TB, files []file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeXGlobalHeader {
			h.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing %q: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var mtime = time.Unix(1700000000, 0)

// windowsLayer is shaped like the tars hcsshim and docker write for Windows
// layers: PAX records on every entry, directories, files of sizes around
// the block size, a symlink, a hard link, long and non-ASCII names.
func windowsLayer(t testing.TB) []byte {
	rec := func(attr string) map[string]string {
		return map[string]string{
			"MSWINDOWS.fileattr":      attr,
			"MSWINDOWS.rawsd":         "AQAEgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAgAgAAAQIAAAAAAAUgAAAAIAIAAA==",
			"LIBARCHIVE.creationtime": "1699999999.5",
		}
	}
	long := "Files/" + strings.Repeat("deep/", 30) + "file.txt"
	files := []file{
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "Files/", ModTime: mtime, PAXRecords: rec("16")}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "Files/Windows/", ModTime: mtime, PAXRecords: rec("16")}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/Windows/a.txt", ModTime: mtime, PAXRecords: rec("32")}, data: "hello"},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/Windows/empty", ModTime: mtime, PAXRecords: rec("32")}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/Windows/b511", ModTime: mtime}, data: strings.Repeat("b", 511)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/Windows/c512", ModTime: mtime}, data: strings.Repeat("c", 512)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/Windows/d513", ModTime: mtime, Mode: 0o644, Uid: 1000, Gid: 1000}, data: strings.Repeat("d", 513)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/Windows/a.txt:stream", ModTime: mtime}, data: "ads"},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/Ünïcödé ∂ file.txt", ModTime: mtime}, data: "non-ASCII name: a PAX path"},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/" + strings.Repeat("p", 90) + "/" + strings.Repeat("n", 90), ModTime: mtime}, data: "USTAR prefix"},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: long, ModTime: time.Unix(1700000000, 987654321)}, data: "PAX path and mtime"},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "Files/link", Linkname: `C:\Windows\a.txt`, ModTime: mtime, PAXRecords: map[string]string{"MSWINDOWS.mountpoint": "1"}}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "Files/hard", Linkname: "Files/Windows/a.txt", ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Hives/Software_Delta", ModTime: mtime, AccessTime: time.Unix(1600000000, 5), ChangeTime: time.Unix(1600000001, 0), PAXRecords: rec("32")}, data: strings.Repeat("regf", 300)},
	}
	return build(t, files)
}

// otherShapes are tars tarstream hands to archive/tar: GNU headers (long
// names, base-256 numbers), a PAX global header, a GNU sparse record.
func otherShapes(t testing.TB) map[string][]byte {
	gnuLong := strings.Repeat("g", 200)
	return map[string][]byte{
		"gnu": build(t, []file{
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: gnuLong, ModTime: mtime, Format: tar.FormatGNU}, data: "GNU long name"},
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big-uid", Uid: 1 << 30, ModTime: mtime, Format: tar.FormatGNU}, data: "base-256"},
		}),
		"global": build(t, []file{
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "first", ModTime: mtime}, data: "1"},
			{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "global"}}},
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "second", ModTime: mtime}, data: "2"},
		}),
		// archive/tar's writer refuses GNU.sparse records: rename one.
		"sparse-record": bytes.Replace(build(t, []file{
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "first", ModTime: mtime}, data: "1"},
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "s", ModTime: mtime, PAXRecords: map[string]string{"XXX.sparse.name": "sparse-name"}}, data: "2"},
		}), []byte("XXX.sparse."), []byte("GNU.sparse."), 1),
		"fifo": build(t, []file{
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "first", ModTime: mtime}, data: "1"},
			{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "pipe", ModTime: mtime}},
		}),
	}
}

func TestWindowsLayerParsedWithoutArchiveTar(t *testing.T) {
	if !compare(t, windowsLayer(t)) {
		t.Fatal("a tar shaped like a Windows layer was handed to archive/tar: the fast path is not used")
	}
}

func TestOtherShapesMatchArchiveTar(t *testing.T) {
	for name, data := range otherShapes(t) {
		t.Run(name, func(t *testing.T) {
			if compare(t, data) {
				t.Fatal("tarstream parsed this itself; it is meant to hand it over")
			}
		})
	}
}

// Every truncation of the layer must end as archive/tar ends: the same
// entries, the same error, the same bytes left unread.
func TestTruncatedAtEveryByte(t *testing.T) {
	data := windowsLayer(t)
	for n := range len(data) + 1 {
		compare(t, data[:n])
	}
}

// Edits of single header bytes (checksum, type, sizes, magic, PAX lengths)
// must be refused, or accepted, exactly as archive/tar does.
func TestCorruptedHeadersMatchArchiveTar(t *testing.T) {
	data := windowsLayer(t)
	for _, off := range []int{0, 100, 124, 130, 148, 150, 156, 257, 263, 345, 508, 512, 513, 520, 1024, 1536, 2048} {
		for _, v := range []byte{0, ' ', '7', '9', 'x', 'L', '5', 0x80, 0xff} {
			if off >= len(data) {
				continue
			}
			c := bytes.Clone(data)
			c[off] = v
			compare(t, c)
		}
	}
}

// paxRecord formats one PAX record, "%d %s=%s\n", its length counting itself.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	n += len(strconv.Itoa(n))
	if r := fmt.Sprintf("%d %s=%s\n", n, k, v); len(r) == n {
		return r
	}
	return fmt.Sprintf("%d %s=%s\n", n+1, k, v)
}

// paxHeader returns a PAX 'x' header (block, data and padding) holding
// records as given. archive/tar's writer emits one before an entry at most,
// so it writes a regular file and the type and checksum are patched.
func paxHeader(t testing.TB, records string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "PaxHeaders/x", Size: int64(len(records)), Mode: 0o644, Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(tw, records); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	blk := b.Bytes()
	blk[156] = tar.TypeXHeader
	copy(blk[148:156], "        ")
	sum := 0
	for _, c := range blk[:512] {
		sum += int(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return blk
}

// A hostile tar may put any number of PAX 'x' headers of up to 1 MiB each
// before one entry. archive/tar keeps only the latest one's records (each
// replaces those before it), and so must tarstream, fallback buffer
// included: a worker holding every header would run out of memory. The
// headers differ, and only the first sets a path, so a reader applying (or
// handing over) any but the latest disagrees with archive/tar.
func TestConsecutivePAXHeadersBoundedMemory(t *testing.T) {
	const headers = 8
	big := func(i int) string {
		// Short of the limit by room for the first header's path and mtime.
		return paxRecord("comment", strings.Repeat(string(rune('a'+i)), tarstream.MaxPAXSize-200))
	}
	var run []byte
	for i := range headers {
		recs := big(i)
		if i == 0 {
			recs = paxRecord("path", "Files/only-in-the-first-header") + paxRecord("mtime", "1.5") + recs
		}
		run = append(run, paxHeader(t, recs)...)
	}
	entry := build(t, []file{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/f", ModTime: mtime, Format: tar.FormatUSTAR}, data: "x"}})
	gnu := build(t, []file{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.Repeat("g", 200), ModTime: mtime, Format: tar.FormatGNU}, data: "GNU long name"}})
	tests := []struct {
		name     string
		data     []byte
		handOver bool
	}{
		{"then a USTAR entry", slices.Concat(run, entry), false},
		{"then a GNU long-name entry (handed over)", slices.Concat(run, gnu), true},
		{"the last one malformed (handed over)", slices.Concat(run, paxHeader(t, "9 comment\n"), entry), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast := compare(t, tt.data); fast == tt.handOver {
				t.Errorf("handed over to archive/tar: %v, want %v", !fast, tt.handOver)
			}
			r := tarstream.NewReader(bytes.NewReader(tt.data))
			_, _ = r.Next()
			// One header and a few blocks; append's growth may round up.
			if got, limit := r.ReplayRetained(), 2*tarstream.MaxPAXSize; got > limit {
				t.Errorf("after %d PAX headers of 1 MiB, the reader retains %d bytes for a hand-over, want at most %d (archive/tar keeps the latest header only)", headers, got, limit)
			}
		})
	}
}

var errSource = errors.New("source failed")

// A failing source's error reaches the caller unchanged, wherever it fails.
func TestSourceErrorsPassThrough(t *testing.T) {
	data := windowsLayer(t)
	for n := 0; n <= len(data); n += 97 {
		r := tarstream.NewReader(io.MultiReader(bytes.NewReader(data[:n]), &failing{}))
		var err error
		for err == nil {
			_, err = r.Next()
			if err == nil {
				_, err = io.Copy(io.Discard, r)
				if err == nil {
					continue
				}
			}
		}
		if !errors.Is(err, errSource) {
			t.Fatalf("source failing after %d bytes: got %v, want %v", n, err, errSource)
		}
	}
}

type failing struct{}

func (*failing) Read([]byte) (int, error) { return 0, errSource }

func FuzzMatchesArchiveTar(f *testing.F) {
	f.Add(windowsLayer(f))
	for _, data := range otherShapes(f) {
		f.Add(data)
	}
	// Consecutive PAX headers: only the latest applies.
	f.Add(slices.Concat(paxHeader(f, paxRecord("path", "Files/a")), paxHeader(f, paxRecord("comment", "b")),
		build(f, []file{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "Files/f", ModTime: mtime, Format: tar.FormatUSTAR}, data: "x"}})))
	f.Fuzz(func(t *testing.T, data []byte) {
		compare(t, data)
	})
}

func BenchmarkNext(b *testing.B) {
	var files []file
	for i := range 2000 {
		files = append(files, file{
			hdr: tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("Files/Windows/System32/dir%03d/file%05d.dll", i%100, i), ModTime: mtime,
				PAXRecords: map[string]string{"MSWINDOWS.fileattr": "32", "MSWINDOWS.rawsd": strings.Repeat("A", 120), "LIBARCHIVE.creationtime": "1699999999.5"}},
			data: strings.Repeat("x", 100),
		})
	}
	data := build(b, files)
	for _, impl := range []struct {
		name string
		new  func(io.Reader) tarReader
	}{
		{"archive-tar", func(r io.Reader) tarReader { return tar.NewReader(r) }},
		{"tarstream", func(r io.Reader) tarReader { return tarstream.NewReader(r) }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				tr := impl.new(bytes.NewReader(data))
				for {
					if _, err := tr.Next(); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
			}
		})
	}
}
