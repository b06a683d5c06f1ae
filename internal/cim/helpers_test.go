package cim

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"unicode/utf16"

	"github.com/cimconv/cimconv/internal/fsview"
)

// Fixtures shared by the tests.
var (
	sdA = []byte{1, 0, 0x04, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14, 0, 0, 0, 2, 0, 8, 0, 0, 0, 0, 0}
	sdB = []byte{1, 0, 0x04, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14, 0, 0, 0, 2, 0, 8, 0, 1, 0, 0, 0}
	// eaOne is one FILE_FULL_EA_INFORMATION: NextEntryOffset 0, Flags 0,
	// EaNameLength 3, EaValueLength 2, "FOO\0", value "hi".
	eaOne = []byte{0, 0, 0, 0, 0, 3, 2, 0, 'F', 'O', 'O', 0, 'h', 'i'}
)

// symlinkReparse builds an IO_REPARSE_TAG_SYMLINK REPARSE_DATA_BUFFER.
func symlinkReparse(target string, relative bool) []byte {
	t := utf16.Encode([]rune(target))
	nameBytes := 2 * len(t)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint32(0xA000000C))
	binary.Write(&b, binary.LittleEndian, uint16(12+2*nameBytes))
	binary.Write(&b, binary.LittleEndian, uint16(0))
	binary.Write(&b, binary.LittleEndian, []uint16{0, uint16(nameBytes), uint16(nameBytes), uint16(nameBytes)})
	flags := uint32(0)
	if relative {
		flags = 1
	}
	binary.Write(&b, binary.LittleEndian, flags)
	binary.Write(&b, binary.LittleEndian, t)
	binary.Write(&b, binary.LittleEndian, t)
	return b.Bytes()
}

// junctionReparse builds an IO_REPARSE_TAG_MOUNT_POINT buffer.
func junctionReparse(target string) []byte {
	t := utf16.Encode([]rune(`\??\` + target))
	nameBytes := 2 * len(t)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint32(0xA0000003))
	binary.Write(&b, binary.LittleEndian, uint16(8+2*nameBytes+4))
	binary.Write(&b, binary.LittleEndian, uint16(0))
	binary.Write(&b, binary.LittleEndian, []uint16{0, uint16(nameBytes), uint16(nameBytes + 2), uint16(nameBytes)})
	binary.Write(&b, binary.LittleEndian, t)
	binary.Write(&b, binary.LittleEndian, uint16(0))
	binary.Write(&b, binary.LittleEndian, t)
	binary.Write(&b, binary.LittleEndian, uint16(0))
	return b.Bytes()
}

func dirInfo(sd []byte) *FileInfo {
	return &FileInfo{Attributes: AttrDirectory, SecurityDescriptor: sd, CreationTime: 1, LastWriteTime: 2, ChangeTime: 3, LastAccessTime: 4}
}

func fileInfo(attr uint32, sd []byte) *FileInfo {
	return &FileInfo{Attributes: attr, SecurityDescriptor: sd, CreationTime: 11, LastWriteTime: 12, ChangeTime: 13, LastAccessTime: 14}
}

func mustAddFile(t testing.TB, w *Writer, p string, info *FileInfo, data []byte) {
	t.Helper()
	if err := w.AddFile(p, info, int64(len(data))); err != nil {
		t.Fatalf("AddFile(%q): %v", p, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write(%q): %v", p, err)
	}
}

func mustAddStream(t testing.TB, w *Writer, p, name string, data []byte) {
	t.Helper()
	if err := w.AddAlternateStream(p, name, int64(len(data))); err != nil {
		t.Fatalf("AddAlternateStream(%q, %q): %v", p, name, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write(%q:%q): %v", p, name, err)
	}
}

func mustCommit(t testing.TB, w *Writer) {
	t.Helper()
	if err := w.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func mustOpen(t testing.TB, p string) *Image {
	t.Helper()
	im, err := Open(p)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}

func mustView(t testing.TB, im *Image) []fsview.Entry {
	t.Helper()
	v, err := im.View()
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	return v
}

func readAll(t testing.TB, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func enc(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

// expect is a hand-kept model of what a CIM should contain.
type expect map[string]fsview.Entry

func (e expect) dir(p string, sd []byte) {
	e[p] = fsview.Entry{Path: p, Type: fsview.TypeDir, Attributes: AttrDirectory, SD: enc(sd), LastWriteTime: 2}
}

func (e expect) file(p string, attr uint32, sd, data []byte) {
	e[p] = fsview.Entry{Path: p, Type: fsview.TypeFile, Size: int64(len(data)), Attributes: attr & StoredAttributes, SHA256: sum(data), SD: enc(sd), LastWriteTime: 12}
}

func (e expect) entries() []fsview.Entry {
	var out []fsview.Entry
	for _, v := range e {
		if v.SD == "" {
			v.SD = enc(NullSD)
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func compareView(t testing.TB, want expect, im *Image) {
	t.Helper()
	got := mustView(t, im)
	if d := fsview.Compare(want.entries(), got, fsview.CompareOptions{}); len(d) > 0 {
		for _, x := range d {
			t.Errorf("view: %s", x)
		}
	}
}

func dirSize(t testing.TB, dir string, names []string) int64 {
	t.Helper()
	var n int64
	for _, f := range names {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

var osReadFile = os.ReadFile
