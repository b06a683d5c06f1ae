package cim

import (
	"bytes"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/fsview"
)

// buildEveryKind writes a CIM holding every entry kind and returns the
// expected view.
func buildEveryKind(t *testing.T, dir, name string, opts ...WriterOption) expect {
	t.Helper()
	w, err := Create(dir, name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := expect{}

	if err := w.AddFile("Files", dirInfo(sdA), 0); err != nil {
		t.Fatal(err)
	}
	want.dir("Files", sdA)
	mustAddFile(t, w, "Files/hello.txt", fileInfo(AttrArchive|0x80|0x2000, sdA), []byte("hello, world\n"))
	want.file("Files/hello.txt", AttrArchive, sdA, []byte("hello, world\n"))
	mustAddFile(t, w, `Files\empty`, fileInfo(AttrReadOnly|AttrHidden|AttrSystem, sdB), nil)
	want.file("Files/empty", AttrReadOnly|AttrHidden|AttrSystem, sdB, nil)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes: data region
	mustAddFile(t, w, "Files/big.bin", fileInfo(0, nil), big)
	want.file("Files/big.bin", 0, nil, big)
	zeros := make([]byte, 100000)
	mustAddFile(t, w, "Files/zeros.bin", fileInfo(0, sdA), zeros)
	want.file("Files/zeros.bin", 0, sdA, zeros)
	lead := append(make([]byte, 9000), 'x') // leading zeros then data
	mustAddFile(t, w, "Files/leadzeros.bin", fileInfo(0, sdA), lead)
	want.file("Files/leadzeros.bin", 0, sdA, lead)

	// 45 nested directories.
	p := "Files"
	for i := 0; i < 45; i++ {
		p += "/d" + string(rune('a'+i%26))
		if err := w.AddFile(p, dirInfo(sdB), 0); err != nil {
			t.Fatal(err)
		}
		want.dir(p, sdB)
	}
	mustAddFile(t, w, p+"/deep.txt", fileInfo(0, sdB), []byte("deep"))
	want.file(p+"/deep.txt", 0, sdB, []byte("deep"))

	long := strings.Repeat("n", 251) + ".txt"
	mustAddFile(t, w, "Files/"+long, fileInfo(0, sdA), []byte("long"))
	want.file("Files/"+long, 0, sdA, []byte("long"))
	for _, u := range []string{"Ünïcødé.txt", "日本語", "emoji-😀.txt", "\U0001F600\U0001F601", "ǆ-title"} {
		mustAddFile(t, w, "Files/"+u, fileInfo(0, sdA), []byte(u))
		want.file("Files/"+u, 0, sdA, []byte(u))
	}

	// Reparse points: a file symlink and a directory junction.
	link := symlinkReparse(`..\hello.txt`, true)
	info := fileInfo(0, sdA)
	info.ReparseData = link
	mustAddFile(t, w, "Files/link", info, nil)
	want["Files/link"] = fsview.Entry{Path: "Files/link", Type: fsview.TypeSymlink, Attributes: AttrReparsePoint, SD: enc(sdA), Reparse: enc(link), LastWriteTime: 12}
	jn := junctionReparse(`C:\Windows`)
	jinfo := dirInfo(sdA)
	jinfo.ReparseData = jn
	if err := w.AddFile("Files/junction", jinfo, 0); err != nil {
		t.Fatal(err)
	}
	want["Files/junction"] = fsview.Entry{Path: "Files/junction", Type: fsview.TypeJunction, Attributes: AttrDirectory | AttrReparsePoint, SD: enc(sdA), Reparse: enc(jn), LastWriteTime: 2}
	// Any other tag (here IO_REPARSE_TAG_WOF) is a "reparse" entry naming it.
	wof := []byte{0x17, 0x00, 0x00, 0x80, 4, 0, 0, 0, 1, 2, 3, 4}
	winfo := fileInfo(0, sdA)
	winfo.ReparseData = wof
	mustAddFile(t, w, "Files/wof.dll", winfo, nil)
	want["Files/wof.dll"] = fsview.Entry{Path: "Files/wof.dll", Type: fsview.TypeReparse, ReparseTag: 0x80000017, Attributes: AttrReparsePoint, SD: enc(sdA), Reparse: enc(wof), LastWriteTime: 12}

	// EA.
	einfo := fileInfo(0, sdA)
	einfo.ExtendedAttributes = eaOne
	mustAddFile(t, w, "Files/ea.txt", einfo, []byte("ea"))
	e := fsview.Entry{Path: "Files/ea.txt", Type: fsview.TypeFile, Size: 2, SHA256: sum([]byte("ea")), SD: enc(sdA), EA: enc(eaOne), LastWriteTime: 12}
	want["Files/ea.txt"] = e

	// Alternate streams on a file and on a directory.
	mustAddStream(t, w, "Files/hello.txt", "Zone.Identifier", []byte("[ZoneTransfer]\r\nZoneId=3\r\n"))
	mustAddStream(t, w, "Files/hello.txt", "alpha", []byte("a"))
	mustAddStream(t, w, "Files/hello.txt", "empty", nil)
	he := want["Files/hello.txt"]
	he.Streams = []fsview.Stream{
		{Name: "Zone.Identifier", Size: 26, SHA256: sum([]byte("[ZoneTransfer]\r\nZoneId=3\r\n"))},
		{Name: "alpha", Size: 1, SHA256: sum([]byte("a"))},
		{Name: "empty", Size: 0, SHA256: sum(nil)},
	}
	want["Files/hello.txt"] = he
	mustAddStream(t, w, "Files", "dirstream", big)
	fe := want["Files"]
	fe.Streams = []fsview.Stream{{Name: "dirstream", Size: int64(len(big)), SHA256: sum(big)}}
	want["Files"] = fe

	// Hard links: Files/hello.txt also appears as Files/dz/hard.txt (first
	// parent stays Files) and as Hard.TXT at the root.
	if err := w.AddFile("Files/dz", dirInfo(sdA), 0); err != nil {
		t.Fatal(err)
	}
	want.dir("Files/dz", sdA)
	for _, np := range []string{"Files/dz/hard.txt", "Hard.TXT"} {
		if err := w.AddLink("files/HELLO.txt", np); err != nil {
			t.Fatal(err)
		}
		h := want["Files/hello.txt"]
		h.Path = np
		want[np] = h
	}

	// Replacement by a case-different name: the later entry wins with its spelling.
	mustAddFile(t, w, "Files/Replace.txt", fileInfo(0, sdA), []byte("old"))
	mustAddFile(t, w, "FILES/rEPLACE.TXT", fileInfo(0, sdB), []byte("new!"))
	want.file("Files/rEPLACE.TXT", 0, sdB, []byte("new!"))
	// A directory re-added keeps its children, takes the new spelling.
	if err := w.AddFile("files/DZ", dirInfo(sdB), 0); err != nil {
		t.Fatal(err)
	}
	delete(want, "Files/dz")
	want.dir("Files/DZ", sdB)
	h := want["Files/dz/hard.txt"]
	delete(want, "Files/dz/hard.txt")
	h.Path = "Files/DZ/hard.txt"
	want[h.Path] = h

	// Unlink of a subtree.
	if err := w.AddFile("Files/gone", dirInfo(sdA), 0); err != nil {
		t.Fatal(err)
	}
	mustAddFile(t, w, "Files/gone/a", fileInfo(0, sdA), []byte("a"))
	if err := w.AddFile("Files/gone/sub", dirInfo(sdA), 0); err != nil {
		t.Fatal(err)
	}
	mustAddFile(t, w, "Files/gone/sub/b", fileInfo(0, sdA), []byte("b"))
	if err := w.Unlink("FILES/Gone"); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, w)
	return want
}

func TestRoundTripEveryKind(t *testing.T) {
	for _, v := range []struct {
		name         string
		major, minor uint32
		entry        int
	}{{"v3", 3, 0, fileSizeV3}, {"v2", 2, 0, fileSizeV2}} {
		t.Run(v.name, func(t *testing.T) {
			dir := t.TempDir()
			want := buildEveryKind(t, dir, "layer", WithVersion(v.major, v.minor))
			im := mustOpen(t, filepath.Join(dir, "layer.cim"))
			compareView(t, want, im)

			// Hard links share a FileID; the parent is the first parent.
			a, _ := im.Stat("Files/hello.txt")
			b, _ := im.Stat("Files/DZ/hard.txt")
			c, _ := im.Stat("hard.txt")
			files, _ := im.Stat("Files")
			if a == nil || b == nil || c == nil || a.FileID != b.FileID || a.FileID != c.FileID {
				t.Fatalf("hard links do not share a FileID: %+v %+v %+v", a, b, c)
			}
			if a.ParentID != files.FileID {
				t.Errorf("hard-linked file ParentID %d, want first parent %d", a.ParentID, files.FileID)
			}
			z, err := im.Stat("Files/zeros.bin")
			if err != nil || !z.Sparse || z.Size != 100000 {
				t.Errorf("zeros.bin: %+v, %v; want sparse 100000 bytes", z, err)
			}
			if lz, _ := im.Stat("Files/leadzeros.bin"); lz.Sparse {
				t.Errorf("leadzeros.bin stored sparse")
			}
			// Case-insensitive lookups and stream reads.
			r, err := im.OpenStream("FILES/HELLO.TXT", "zone.identifier")
			if err != nil {
				t.Fatal(err)
			}
			if got := string(readAll(t, r)); !strings.Contains(got, "ZoneId=3") {
				t.Errorf("stream content %q", got)
			}
			if _, err := im.Stat("Files/gone"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("unlinked dir: err %v, want ErrNotExist", err)
			}
			info, err := Inspect(filepath.Join(dir, "layer.cim"))
			if err != nil {
				t.Fatal(err)
			}
			if info.SecurityDescriptors != 3 { // sdA, sdB, NullSD
				t.Errorf("SecurityDescriptors = %d, want 3", info.SecurityDescriptors)
			}
			if info.HardLinks != 2 || info.FileEntrySize != v.entry {
				t.Errorf("inspect: %+v", info)
			}
			// Only the 3 unique SDs are stored: count them in the metadata region.
			meta := readRegion(t, dir, info.RegionSet.ID, 0)
			if n := bytes.Count(meta, sdA); n != 1 {
				t.Errorf("sdA stored %d times, want 1 (dedupe)", n)
			}
		})
	}
}

func readRegion(t *testing.T, dir, id string, i int) []byte {
	t.Helper()
	b, err := osReadFile(filepath.Join(dir, "region_"+id+"_"+string(rune('0'+i))))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadDirOrderIsUpcaseOrder(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	// Upcased: "A_" (0x5F) sorts after "AB" (0x42), though 'a'(0x61) > '_' in raw order;
	// the surrogate pair (U+1F600) sorts after U+FFE0-class BMP characters.
	names := []string{"a_", "AB", "\U0001F600", "\uFF21", "b"}
	for _, n := range names {
		mustAddFile(t, w, n, fileInfo(0, nil), nil)
	}
	mustCommit(t, w)
	im := mustOpen(t, filepath.Join(dir, "x.cim"))
	ents, err := im.ReadDir("")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name)
	}
	want := []string{"AB", "a_", "b", "\uFF21", "\U0001F600"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("order %q, want %q", got, want)
	}
	for _, n := range names {
		if _, err := im.Stat(strings.ToUpper(n)); err != nil {
			t.Errorf("binary search for %q: %v", n, err)
		}
	}
}

func TestWriterErrors(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "e")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mustAddFile(t, w, "f", fileInfo(0, nil), []byte("x"))
	tests := []struct {
		name string
		do   func() error
		is   error
	}{
		{"missing parent", func() error { return w.AddFile("nodir/f", fileInfo(0, nil), 0) }, fs.ErrNotExist},
		{"parent is a file", func() error { return w.AddFile("f/g", fileInfo(0, nil), 0) }, nil},
		{"name too long", func() error { return w.AddFile(strings.Repeat("x", 256), fileInfo(0, nil), 0) }, nil},
		{"dot dot", func() error { return w.AddFile("a/../b", fileInfo(0, nil), 0) }, nil},
		{"dir with size", func() error { return w.AddFile("d", dirInfo(nil), 5) }, nil},
		{"nil info", func() error { return w.AddFile("d", nil, 0) }, nil},
		{"unlink absent", func() error { return w.Unlink("nothing") }, fs.ErrNotExist},
		{"link to absent", func() error { return w.AddLink("nothing", "l") }, fs.ErrNotExist},
		{"stream on absent", func() error { return w.AddAlternateStream("nothing", "s", 0) }, fs.ErrNotExist},
		{"stream name with colon", func() error { return w.AddAlternateStream("f", "s:$DATA", 0) }, nil},
		{"short reparse", func() error { i := fileInfo(0, nil); i.ReparseData = []byte{1}; return w.AddFile("r", i, 0) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if err == nil {
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
	// Short and long writes.
	if err := w.AddFile("short", fileInfo(0, nil), 10); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("abc"))
	if err := w.AddFile("next", fileInfo(0, nil), 0); err == nil || !strings.Contains(err.Error(), "wrote 3 of 10") {
		t.Errorf("short write not reported: %v", err)
	}
	// The short write is sticky: the CIM cannot be committed, and a failed
	// Commit leaves nothing behind.
	if err := w.Commit(); err == nil {
		t.Error("Commit after a short write succeeded")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) > 0 {
		t.Errorf("files left after a failed Commit: %v", left)
	}

	w2, err := Create(dir, "long")
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if err := w2.AddFile("long", fileInfo(0, nil), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Write([]byte("abc")); err == nil {
		t.Error("long write accepted")
	}
	if err := w2.Commit(); err == nil {
		t.Error("Commit after a long write succeeded")
	}
}

func TestCloseWithoutCommitLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "abandoned")
	if err != nil {
		t.Fatal(err)
	}
	mustAddFile(t, w, "f", fileInfo(0, nil), bytes.Repeat([]byte{1}, 10000))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) > 0 {
		t.Errorf("files left behind: %v", left)
	}
	w, err = Create(dir, "ok")
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, w)
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 7 || len(w.Files()) != 7 {
		t.Errorf("committed files %v, Files() %v; want .cim + 3 regions + 3 objectid", left, w.Files())
	}
	if _, err := Create(dir, "ok"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over an existing CIM: %v", err)
	}
}

// TestCallsAfterCloseOrCommit: once closed or committed, a Writer refuses
// every call with its "already committed or closed" error. Write and
// ReadFrom after Close with a stream still open used to reach the stopped
// region writer and panic (send on a closed channel).
func TestCallsAfterCloseOrCommit(t *testing.T) {
	big := make([]byte, 2<<20) // more than the region writer's 1 MiB buffer
	big[0] = 1
	write := func(w *Writer) error { _, err := w.Write(big); return err }
	readFrom := func(w *Writer) error { _, err := w.ReadFrom(bytes.NewReader(big)); return err }
	addFile := func(w *Writer) error { return w.AddFile("g", fileInfo(0, nil), 0) }
	tests := []struct {
		name   string
		commit bool // Commit (a complete file) instead of Close (a stream left open)
		call   func(w *Writer) error
	}{
		{"Write after Close", false, write},
		{"ReadFrom after Close", false, readFrom},
		{"AddFile after Close", false, addFile},
		{"Commit after Close", false, (*Writer).Commit},
		{"Write after Commit", true, write},
		{"ReadFrom after Commit", true, readFrom},
		{"AddFile after Commit", true, addFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Create(t.TempDir(), "x")
			if err != nil {
				t.Fatal(err)
			}
			if tt.commit {
				mustAddFile(t, w, "f", fileInfo(0, nil), []byte{1})
				mustCommit(t, w)
			} else {
				if err := w.AddFile("f", fileInfo(0, nil), 4<<20); err != nil {
					t.Fatal(err)
				}
				if _, err := w.Write([]byte{1}); err != nil { // the stream has begun
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			}
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panicked: %v", r)
				}
			}()
			err = tt.call(w)
			if err == nil || !strings.Contains(err.Error(), "already committed or closed") {
				t.Errorf("error %v, want the writer's \"already committed or closed\"", err)
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	id := GUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	d1, d2 := t.TempDir(), t.TempDir()
	buildEveryKind(t, d1, "layer", WithRegionSetID(id))
	buildEveryKind(t, d2, "layer", WithRegionSetID(id))
	names, _ := filepath.Glob(filepath.Join(d1, "*"))
	if len(names) != 7 {
		t.Fatalf("files %v", names)
	}
	for _, n := range names {
		a, _ := osReadFile(n)
		b, err := osReadFile(filepath.Join(d2, filepath.Base(n)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two identical builds", filepath.Base(n))
		}
	}
}

func TestReplacementKinds(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "r")
	if err != nil {
		t.Fatal(err)
	}
	want := expect{}
	// A directory with children replaced by a file: the subtree goes.
	w.AddFile("d", dirInfo(nil), 0)
	mustAddFile(t, w, "d/child", fileInfo(0, nil), []byte("c"))
	mustAddFile(t, w, "D", fileInfo(0, nil), []byte("now a file"))
	want.file("D", 0, nil, []byte("now a file"))
	// A file replaced by a directory.
	mustAddFile(t, w, "f", fileInfo(0, nil), []byte("file"))
	w.AddFile("F", dirInfo(nil), 0)
	want.dir("F", nil)
	// One name of a hard-linked file replaced: the other keeps the old data.
	mustAddFile(t, w, "orig", fileInfo(0, nil), []byte("old"))
	if err := w.AddLink("orig", "link"); err != nil {
		t.Fatal(err)
	}
	mustAddFile(t, w, "ORIG", fileInfo(0, nil), []byte("new"))
	want.file("ORIG", 0, nil, []byte("new"))
	want.file("link", 0, nil, []byte("old"))
	// A stream replaced by a case-different name.
	mustAddStream(t, w, "link", "S", []byte("1"))
	mustAddStream(t, w, "link", "s", []byte("22"))
	l := want["link"]
	l.Streams = []fsview.Stream{{Name: "s", Size: 2, SHA256: sum([]byte("22"))}}
	want["link"] = l
	if ex, isDir := w.Stat("f"); !ex || !isDir {
		t.Errorf("Stat(f) = %v, %v; want a directory", ex, isDir)
	}
	mustCommit(t, w)
	im := mustOpen(t, filepath.Join(dir, "r.cim"))
	compareView(t, want, im)
	a, _ := im.Stat("link")
	b, _ := im.Stat("orig")
	if a.FileID == b.FileID {
		t.Error("replaced name still shares the FileID of its old hard link")
	}
}

// TestReparsePointReplacesDirectory: only a plain directory re-listed as a
// plain directory keeps its children. A junction or directory symlink (a
// reparse point with the directory attribute) replacing a directory drops
// its subtree, and a directory replacing such a reparse point starts empty,
// as the layers' merged view (wclayer.MergeView, what `cim verify` compares
// with) has it; in the same image and across a fork (a child layer
// replacing its parent's directory).
func TestReparsePointReplacesDirectory(t *testing.T) {
	jn := junctionReparse(`C:\elsewhere`)
	dl := symlinkReparse(`..\elsewhere`, true)
	reparseDir := func(rp []byte) *FileInfo { i := dirInfo(sdB); i.ReparseData = rp; return i }
	tests := []struct {
		name    string
		setup   func(t *testing.T, w *Writer) // in the base image
		replace func(t *testing.T, w *Writer) // in the same image or a forked one
		want    expect
	}{
		{
			name: "junction replaces a directory",
			setup: func(t *testing.T, w *Writer) {
				w.AddFile("d", dirInfo(sdA), 0)
				w.AddFile("d/sub", dirInfo(sdA), 0)
				mustAddFile(t, w, "d/sub/x", fileInfo(0, sdA), []byte("x"))
			},
			replace: func(t *testing.T, w *Writer) {
				if err := w.AddFile("D", reparseDir(jn), 0); err != nil {
					t.Fatal(err)
				}
			},
			want: expect{"D": {Path: "D", Type: fsview.TypeJunction, Attributes: AttrDirectory | AttrReparsePoint, SD: enc(sdB), Reparse: enc(jn), LastWriteTime: 2}},
		},
		{
			name: "directory symlink replaces a directory",
			setup: func(t *testing.T, w *Writer) {
				w.AddFile("d", dirInfo(sdA), 0)
				mustAddFile(t, w, "d/x", fileInfo(0, sdA), []byte("x"))
			},
			replace: func(t *testing.T, w *Writer) {
				if err := w.AddFile("d", reparseDir(dl), 0); err != nil {
					t.Fatal(err)
				}
			},
			want: expect{"d": {Path: "d", Type: fsview.TypeSymlink, Attributes: AttrDirectory | AttrReparsePoint, SD: enc(sdB), Reparse: enc(dl), LastWriteTime: 2}},
		},
		{
			name: "directory replaces a junction",
			setup: func(t *testing.T, w *Writer) {
				if err := w.AddFile("j", reparseDir(jn), 0); err != nil {
					t.Fatal(err)
				}
				mustAddFile(t, w, "j/x", fileInfo(0, sdA), []byte("x")) // the writer lets a junction hold entries
			},
			replace: func(t *testing.T, w *Writer) {
				w.AddFile("j", dirInfo(sdA), 0)
				mustAddFile(t, w, "j/y", fileInfo(0, sdA), []byte("y"))
			},
			want: func() expect {
				e := expect{}
				e.dir("j", sdA)
				e.file("j/y", 0, sdA, []byte("y"))
				return e
			}(),
		},
		{
			name: "directory re-listed keeps its children",
			setup: func(t *testing.T, w *Writer) {
				w.AddFile("d", dirInfo(sdA), 0)
				mustAddFile(t, w, "d/x", fileInfo(0, sdA), []byte("x"))
			},
			replace: func(t *testing.T, w *Writer) { w.AddFile("D", dirInfo(sdB), 0) },
			want: func() expect {
				e := expect{}
				e.dir("D", sdB)
				e.file("D/x", 0, sdA, []byte("x"))
				return e
			}(),
		},
	}
	for _, tt := range tests {
		for _, forked := range []bool{false, true} {
			name := tt.name + "/same image"
			if forked {
				name = tt.name + "/forked"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				w, err := Create(dir, "base")
				if err != nil {
					t.Fatal(err)
				}
				tt.setup(t, w)
				top := "base"
				if forked {
					mustCommit(t, w)
					if w, err = CreateForked(dir, "child", "base"); err != nil {
						t.Fatal(err)
					}
					top = "child"
				}
				tt.replace(t, w)
				mustCommit(t, w)
				c := filepath.Join(dir, top+".cim")
				compareView(t, tt.want, mustOpen(t, c))
				if probs, err := Fsck(c); err != nil || len(probs) > 0 {
					t.Errorf("Fsck: %v %v", probs, err)
				}
			})
		}
	}
}

func TestAttributesAsStored(t *testing.T) {
	tests := []struct {
		in           uint32
		dir, reparse bool
		want         uint32
	}{
		{0x80, false, false, 0},                           // NORMAL is not stored
		{0x2020, false, false, AttrArchive},               // NOT_CONTENT_INDEXED dropped
		{0x10, false, false, 0},                           // directory bit comes from the type only
		{0, true, true, AttrDirectory | AttrReparsePoint}, // junction
		{0x207, false, false, 0x207},
	}
	for _, tt := range tests {
		if got := AttributesAsStored(tt.in, tt.dir, tt.reparse); got != tt.want {
			t.Errorf("AttributesAsStored(%#x, %v, %v) = %#x, want %#x", tt.in, tt.dir, tt.reparse, got, tt.want)
		}
	}
}

// TestRename: a writer renamed before Commit writes its files under the new
// name and region-set ID only.
func TestRename(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "tmpname", WithRegionSetID(GUID{1}))
	if err != nil {
		t.Fatal(err)
	}
	mustAddFile(t, w, "f", fileInfo(0, nil), bytes.Repeat([]byte{7}, 5000))
	if err := w.Rename("final", GUID{2}); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, w)
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, n := range names {
		if b := filepath.Base(n); strings.Contains(b, GUID{1}.String()) || strings.HasPrefix(b, "tmpname") || strings.HasPrefix(b, ".tmp-") {
			t.Errorf("left under the old name: %s", b)
		}
	}
	info, err := Inspect(filepath.Join(dir, "final.cim"))
	if err != nil || info.RegionSet.ID != (GUID{2}).String() || len(names) != 7 {
		t.Fatalf("inspect after rename: %+v %v (files %v)", info, err, names)
	}
	r, err := mustOpen(t, filepath.Join(dir, "final.cim")).Open("f")
	if err != nil || !bytes.Equal(readAll(t, r), bytes.Repeat([]byte{7}, 5000)) {
		t.Errorf("data after rename: %v", err)
	}
}

// TestLastDirectoryNeverStale: lookups reuse the directory of the previous
// one; a directory that left the tree (unlinked, replaced by a file or by a
// hard link) must never receive entries afterwards.
func TestLastDirectoryNeverStale(t *testing.T) {
	tests := []struct {
		name    string
		replace func(w *Writer) error // removes or replaces directory "d"
		again   bool                  // "d" is a new directory afterwards
	}{
		{"unlinked and created again", func(w *Writer) error {
			if err := w.Unlink("d"); err != nil {
				return err
			}
			return w.AddFile("d", dirInfo(nil), 0)
		}, true},
		{"replaced by a file", func(w *Writer) error {
			mustAddFile(t, w, "d", fileInfo(0, nil), []byte("file"))
			return nil
		}, false},
		{"replaced by a hard link", func(w *Writer) error {
			mustAddFile(t, w, "f", fileInfo(0, nil), []byte("linked"))
			return w.AddLink("f", "d")
		}, false},
		{"replaced by a junction", func(w *Writer) error {
			// The junction is a directory to the writer: d/new lands in it.
			i := dirInfo(nil)
			i.ReparseData = junctionReparse(`C:\x`)
			return w.AddFile("d", i, 0)
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := Create(dir, "c")
			if err != nil {
				t.Fatal(err)
			}
			if err := w.AddFile("d", dirInfo(nil), 0); err != nil {
				t.Fatal(err)
			}
			mustAddFile(t, w, "d/old", fileInfo(0, nil), []byte("1")) // d is the last directory now
			if err := tc.replace(w); err != nil {
				t.Fatal(err)
			}
			err = w.AddFile("d/new", fileInfo(0, nil), 0)
			if !tc.again {
				if err == nil {
					t.Fatal("adding d/new after d stopped being a directory succeeded (stale directory)")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mustCommit(t, w)
			im := mustOpen(t, filepath.Join(dir, "c.cim"))
			if _, err := im.Stat("d/new"); err != nil {
				t.Errorf("d/new: %v (added to the unlinked directory?)", err)
			}
			if _, err := im.Stat("d/old"); err == nil {
				t.Error("d/old survived the unlink")
			}
		})
	}
}

// TestLastDirectorySpellings: the same directory reached with other
// spellings and separators, and invalid names after a cached directory, get
// the answers of a full walk.
func TestLastDirectorySpellings(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "a/b"} {
		if err := w.AddFile(p, dirInfo(nil), 0); err != nil {
			t.Fatal(err)
		}
	}
	mustAddFile(t, w, "a/b/one", fileInfo(0, nil), []byte("1"))
	mustAddFile(t, w, `a\b\two`, fileInfo(0, nil), []byte("2"))
	mustAddFile(t, w, "A/B/three", fileInfo(0, nil), []byte("3"))
	mustAddFile(t, w, "a/b//four", fileInfo(0, nil), []byte("4"))
	for _, bad := range []string{"a/b/x\x00y", "a/b/..", "a/b/" + strings.Repeat("n", 70000), "a/b/missing/x"} {
		if err := w.AddFile(bad, fileInfo(0, nil), 0); err == nil {
			t.Errorf("AddFile(%.40q) succeeded", bad)
		}
	}
	mustCommit(t, w)
	im := mustOpen(t, filepath.Join(dir, "s.cim"))
	for _, p := range []string{"a/b/one", "a/b/two", "a/b/three", "a/b/four"} {
		if _, err := im.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
