package cim

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

var smallID = GUID{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01}

// buildSmall writes root -> d (dir, with stream "s") -> f ("hello") and
// link "g" -> d/f; FileIDs: root 1, d 2, g/f 3.
func buildSmall(t testing.TB, dir string) string {
	t.Helper()
	w, err := Create(dir, "small", WithRegionSetID(smallID))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("d", dirInfo(sdA), 0); err != nil {
		t.Fatal(err)
	}
	mustAddFile(t, w, "d/f", fileInfo(0, sdB), []byte("hello"))
	mustAddStream(t, w, "d", "s", []byte("stream data"))
	if err := w.AddLink("d/f", "g"); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, w)
	return filepath.Join(dir, "small.cim")
}

// smallLayout locates structures of the small CIM through the reader.
type smallLayout struct {
	meta, small string // region file paths
	fsOff       int64
	ft          int64 // file table
	rootLT      int64 // root link table
	dLT         int64 // d's link table
	dST         int64 // d's stream table
}

func layoutOf(t testing.TB, cimPath string) smallLayout {
	t.Helper()
	im := mustOpen(t, cimPath)
	l := smallLayout{
		meta:  filepath.Join(filepath.Dir(cimPath), "region_"+smallID.String()+"_0"),
		small: filepath.Join(filepath.Dir(cimPath), "region_"+smallID.String()+"_2"),
		fsOff: int64(im.hdr.FilesystemOffset.offset()),
		ft:    int64(im.ftdir[0].Offset.offset()),
	}
	root, _ := im.record(1)
	d, _ := im.record(2)
	l.rootLT = int64(root.DefaultStream.Offset.offset())
	l.dLT = int64(d.DefaultStream.Offset.offset())
	l.dST = int64(d.StreamTable.offset())
	return l
}

func patch(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func u16b(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func u32b(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64b(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func TestCorruptInput(t *testing.T) {
	const es = fileSizeV3
	rec := func(id int) int64 { return int64((id - 1) * es) }
	tests := []struct {
		name   string
		mutate func(t *testing.T, cimPath string, l smallLayout)
		is     error // expected wrapped error (ErrFormat unless set)
	}{
		{"truncated .cim", func(t *testing.T, c string, l smallLayout) { os.Truncate(c, 50) }, nil},
		{"empty .cim", func(t *testing.T, c string, l smallLayout) { os.Truncate(c, 0) }, nil},
		{"bad magic", func(t *testing.T, c string, l smallLayout) { patch(t, c, 0, []byte("cimfile1")) }, nil},
		{"version 4", func(t *testing.T, c string, l smallLayout) { patch(t, c, 16, u32b(4)) }, nil},
		{"version 1", func(t *testing.T, c string, l smallLayout) { patch(t, c, 16, u32b(1)) }, nil},
		{"wrong file type", func(t *testing.T, c string, l smallLayout) { patch(t, c, 12, []byte{1}) }, nil},
		{"zero regions", func(t *testing.T, c string, l smallLayout) { patch(t, c, 48, u16b(0)) }, nil},
		{"region count beyond files", func(t *testing.T, c string, l smallLayout) { patch(t, c, 48, u16b(4)) }, fs.ErrNotExist},
		{"parent count without sets", func(t *testing.T, c string, l smallLayout) { patch(t, c, 70, u16b(3)) }, nil},
		{"missing region file", func(t *testing.T, c string, l smallLayout) { os.Remove(l.small) }, fs.ErrNotExist},
		{"region bad magic", func(t *testing.T, c string, l smallLayout) { patch(t, l.small, 0, []byte("xxxxxxxx")) }, nil},
		{"region wrong version", func(t *testing.T, c string, l smallLayout) { patch(t, l.small, 16, u32b(9)) }, nil},
		{"region wrong index", func(t *testing.T, c string, l smallLayout) { patch(t, l.small, 32, u16b(0)) }, nil},
		{"region truncated header", func(t *testing.T, c string, l smallLayout) { os.Truncate(l.meta, 20) }, nil},
		{"metadata truncated", func(t *testing.T, c string, l smallLayout) { os.Truncate(l.meta, l.fsOff+10) }, nil},
		{"filesystem offset null", func(t *testing.T, c string, l smallLayout) { patch(t, c, 56, u64b(0)) }, nil},
		{"filesystem offset past end", func(t *testing.T, c string, l smallLayout) { patch(t, c, 56, u64b(1<<40)) }, nil},
		{"filesystem region index", func(t *testing.T, c string, l smallLayout) { patch(t, c, 56, u64b(7<<48|40)) }, nil},
		{"root FileID 0", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.fsOff+20, u32b(0)) }, nil},
		{"root FileID out of range", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.fsOff+20, u32b(5000)) }, nil},
		{"root is a file", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(1)+48+6, []byte{0}) }, nil},
		{"file table count > 1024", func(t *testing.T, c string, l smallLayout) {
			im := mustOpen(t, c)
			dirOff := int64(parseFilesystemMust(t, l).FTDir.offset())
			im.Close()
			patch(t, l.meta, dirOff+8, u16b(2000))
		}, nil},
		{"root link table count huge", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.rootLT+4, u32b(0xffffffff)) }, nil},
		{"root link table length huge", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.rootLT, u32b(0xfffffff0)) }, nil},
		{"link table name offset outside", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.rootLT+8+2*4, u32b(0xffff)) }, nil},
		{"link table name length outside", func(t *testing.T, c string, l smallLayout) {
			b, _ := os.ReadFile(l.meta)
			no := binary.LittleEndian.Uint32(b[l.rootLT+8+2*4:])
			patch(t, l.meta, l.rootLT+int64(no), u16b(200))
		}, nil},
		{"child FileID out of range", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.rootLT+8, u32b(99)) }, nil},
		{"directory cycle", func(t *testing.T, c string, l smallLayout) {
			// d's only child (f, id 3) becomes the root (id 1).
			patch(t, l.meta, l.dLT+8, u32b(1))
		}, nil},
		{"data offset past region", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(3)+40, u64b(2<<48|1<<30)) }, nil},
		{"data offset null", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(3)+40, u64b(0)) }, nil},
		{"data length past region", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(3)+48, u64b(1<<40)) }, nil},
		{"huge sparse stream", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(3)+48, u64b(1<<56|1<<47)) }, nil},
		{"unknown stream type", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(3)+48+6, []byte{7}) }, nil},
		{"SD offset past region", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(3)+56, u64b(1<<40)) }, nil},
		{"EA offset invalid", func(t *testing.T, c string, l smallLayout) {
			patch(t, l.meta, l.ft+rec(3)+2, u16b(100))
			patch(t, l.meta, l.ft+rec(3)+64, u64b(5<<48|8))
		}, nil},
		{"reparse offset invalid", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(3)+72, u64b(1<<47)) }, nil},
		{"stream table offset invalid", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.ft+rec(2)+80, u64b(1<<47)) }, nil},
		{"stream table count huge", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.dST+8, u32b(1<<30)) }, nil},
		{"stream table length huge", func(t *testing.T, c string, l smallLayout) { patch(t, l.meta, l.dST, u32b(1<<30)) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := buildSmall(t, dir)
			l := layoutOf(t, c)
			tt.mutate(t, c, l)
			err := openAndView(c)
			if err == nil {
				t.Fatal("corrupt CIM accepted")
			}
			want := tt.is
			if want == nil {
				want = ErrFormat
			}
			if !errors.Is(err, want) {
				t.Errorf("error %q does not wrap %v", err, want)
			}
		})
	}
}

func parseFilesystemMust(t *testing.T, l smallLayout) filesystem {
	b, err := os.ReadFile(l.meta)
	if err != nil {
		t.Fatal(err)
	}
	return parseFilesystem(b[l.fsOff:])
}

// openAndView opens a CIM and reads everything there is to read.
func openAndView(c string) error {
	im, err := Open(c, WithMaxSparseSize(1<<20))
	if err != nil {
		return err
	}
	defer im.Close()
	if _, err := im.View(); err != nil {
		return err
	}
	if _, err := Inspect(c); err != nil {
		return err
	}
	if _, err := Fsck(c); err != nil {
		return err
	}
	for _, p := range []string{"d", "d/f", "g", "nope/x"} {
		im.Stat(p)
		im.Streams(p)
		im.ReadDir(p)
		if r, err := im.Open(p); err == nil {
			buf := make([]byte, 64)
			r.ReadAt(buf, 0)
		}
	}
	return nil
}

func TestStreamTableFramings(t *testing.T) {
	dir := t.TempDir()
	c := buildSmall(t, dir)
	l := layoutOf(t, c)
	// The writer frames the stream table with a u32 count equal to its Length.
	b, _ := os.ReadFile(l.meta)
	n := binary.LittleEndian.Uint32(b[l.dST:])
	if got := binary.LittleEndian.Uint32(b[l.dST+4:]); got != n || n < 8 {
		t.Fatalf("stream table framing: count %d, table length %d", n, got)
	}
	if (l.dST+4)%8 != 0 {
		t.Errorf("link table inside the stream table object at %d, not 8-byte aligned", l.dST+4)
	}
	im := mustOpen(t, c)
	framed, err := im.Streams("d")
	if err != nil || len(framed) != 1 || framed[0].Name != "s" {
		t.Fatalf("framed: %v %v", framed, err)
	}
	im.Close()
	// Point StreamTableOffset 4 bytes further, at the bare link table (it
	// stays inside the region): the reader must accept that framing too.
	patch(t, l.meta, l.ft+int64(fileSizeV3)+80, u64b(uint64(l.dST+4)))
	im = mustOpen(t, c)
	bare, err := im.Streams("d")
	if err != nil || len(bare) != 1 || bare[0].Name != "s" || bare[0].Size != int64(len("stream data")) {
		t.Fatalf("bare: %v %v", bare, err)
	}
	r, err := im.OpenStream("D", "S")
	if err != nil || string(readAll(t, r)) != "stream data" {
		t.Errorf("bare stream read: %v", err)
	}
}
