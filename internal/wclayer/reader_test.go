package wclayer_test

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/hive/hivegen"
	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func TestReaderValid(t *testing.T) {
	longName := strings.Repeat("é", 255) // 255 UTF-16 units, 510 bytes
	deep := "Files"
	for i := 0; i < 42; i++ {
		deep += fmt.Sprintf("/level%02d", i)
	}
	ct := time.Date(2021, 3, 4, 5, 6, 7, 800000000, time.UTC)
	tests := []struct {
		name   string
		layer  *fixture.Layer
		opts   []wclayer.Option
		padded int // zero bytes appended after the tar
		check  func(t *testing.T, es []*wclayer.Entry)
	}{
		{
			name:  "dir with and without trailing slash",
			layer: fixture.NewLayer().Raw(&tar.Header{Name: "Files/", Typeflag: tar.TypeDir}, nil).Raw(&tar.Header{Name: "Files/a", Typeflag: tar.TypeDir}, nil),
			check: func(t *testing.T, es []*wclayer.Entry) {
				want := []string{"Files", "Files/a"}
				for i, e := range es {
					if e.Type != wclayer.TypeDir || e.Path != want[i] || e.Attributes != wclayer.AttrDirectory {
						t.Errorf("entry %d = %v %q %#x, want dir %q 0x10", i, e.Type, e.Path, e.Attributes, want[i])
					}
				}
			},
		},
		{
			name:  "hard link carrying the target's records",
			layer: fixture.NewLayer().File("Files/a.txt", []byte("x")).HardLink("Files/b.txt", "Files/a.txt"),
			check: func(t *testing.T, es []*wclayer.Entry) {
				e := es[len(es)-1]
				if e.Type != wclayer.TypeHardLink || e.Linkname != "Files/a.txt" || e.Size != 0 || e.Attributes != 0x20 {
					t.Errorf("link = %+v", e)
				}
			},
		},
		{
			name:  "hard link into a parent layer",
			layer: fixture.NewLayer().HardLink("Files/b.txt", `Files\Windows\A.TXT`),
			opts:  []wclayer.Option{wclayer.WithParentLookup(func(p string) bool { return strings.EqualFold(p, "Files/Windows/a.txt") })},
			check: func(t *testing.T, es []*wclayer.Entry) {
				if e := es[len(es)-1]; e.Linkname != "Files/Windows/A.TXT" {
					t.Errorf("linkname %q, want the normalized target", e.Linkname)
				}
			},
		},
		{
			name:  "stream without records, on a file of a parent",
			layer: fixture.NewLayer().Stream("Files/x.exe", "Zone.Identifier", []byte("zone")),
			opts:  []wclayer.Option{wclayer.WithParentLookup(func(p string) bool { return p == "Files/x.exe" })},
			check: func(t *testing.T, es []*wclayer.Entry) {
				e := es[0]
				if e.Type != wclayer.TypeStream || e.Path != "Files/x.exe" || e.StreamName != "Zone.Identifier" || e.Size != 4 || e.Attributes != 0 || e.SecurityDescriptor != nil {
					t.Errorf("stream = %+v", e)
				}
			},
		},
		{
			name:  "bare whiteouts",
			layer: fixture.NewLayer().Raw(&tar.Header{Name: "Files/dir/.wh.gone.txt"}, nil).Whiteout("Files/Other"),
			check: func(t *testing.T, es []*wclayer.Entry) {
				var got []string
				for _, e := range es {
					if e.Type == wclayer.TypeWhiteout {
						got = append(got, e.Path)
					}
				}
				if fmt.Sprint(got) != "[Files/dir/gone.txt Files/Other]" {
					t.Errorf("whiteouts %v", got)
				}
			},
		},
		{
			name: "symlinks absolute, relative with backslashes, junction",
			layer: fixture.NewLayer().Symlink("Files/abs", `C:\ProgramData`).Symlink("Files/rel", `..\Windows\notepad.exe`).
				Symlink("Files/junction", `C:\Users\Default`, fixture.WithMountPoint()),
			check: func(t *testing.T, es []*wclayer.Entry) {
				want := map[string]struct {
					tag   uint32
					flags uint32
					sub   string
				}{
					"Files/abs":      {0xA000000C, 0, `\??\C:\ProgramData`},
					"Files/rel":      {0xA000000C, 1, `..\Windows\notepad.exe`},
					"Files/junction": {0xA0000003, 0, `\??\C:\Users\Default`},
				}
				for _, e := range es[1:] {
					w := want[e.Path]
					rp := e.ReparseData
					if e.Type != wclayer.TypeSymlink || e.Attributes&wclayer.AttrReparsePoint == 0 {
						t.Fatalf("%s: %v attrs %#x", e.Path, e.Type, e.Attributes)
					}
					if tag := binary.LittleEndian.Uint32(rp); tag != w.tag {
						t.Errorf("%s: tag %#x, want %#x", e.Path, tag, w.tag)
					}
					if int(binary.LittleEndian.Uint16(rp[4:]))+8 != len(rp) {
						t.Errorf("%s: ReparseDataLength %d for a %d-byte buffer", e.Path, binary.LittleEndian.Uint16(rp[4:]), len(rp))
					}
					names := rp[16:]
					if w.tag == 0xA000000C {
						if f := binary.LittleEndian.Uint32(rp[16:]); f != w.flags {
							t.Errorf("%s: flags %d, want %d", e.Path, f, w.flags)
						}
						names = rp[20:]
					}
					subLen := int(binary.LittleEndian.Uint16(rp[10:]))
					if got := utf16String(names[:subLen]); got != w.sub {
						t.Errorf("%s: substitute name %q, want %q", e.Path, got, w.sub)
					}
					target, mount, err := wclayer.DecodeReparsePoint(rp)
					if err != nil || target != e.Linkname || mount != (w.tag == 0xA0000003) {
						t.Errorf("%s: decode = %q %v %v, want %q", e.Path, target, mount, err, e.Linkname)
					}
				}
			},
		},
		{
			name:  "255-unit name and 42-level path",
			layer: fixture.NewLayer().File("Files/"+longName, nil).File(deep+"/leaf", []byte("x")),
			check: func(t *testing.T, es []*wclayer.Entry) {
				if len(es) != 2+43 {
					t.Errorf("got %d entries, want %d", len(es), 45)
				}
			},
		},
		{
			// The tar component is 277 units; NTFS limits the file name and
			// the stream name (255 each), not the two joined.
			name:  "255-unit file name with an alternate stream",
			layer: fixture.NewLayer().File("Files/"+longName, []byte("x")).Stream("Files/"+longName, "Zone.Identifier", []byte("[ZoneTransfer]")),
			check: func(t *testing.T, es []*wclayer.Entry) {
				e := es[len(es)-1]
				if e.Type != wclayer.TypeStream || e.Path != "Files/"+longName || e.StreamName != "Zone.Identifier" {
					t.Errorf("stream = %v %q %q", e.Type, e.Path, e.StreamName)
				}
			},
		},
		{
			// hcsshim writes the deletion of a 255-unit name as a 259-unit
			// ".wh." component.
			name:  "whiteout of a 255-unit name",
			layer: fixture.NewLayer().Whiteout("Files/" + longName),
			check: func(t *testing.T, es []*wclayer.Entry) {
				e := es[len(es)-1]
				if e.Type != wclayer.TypeWhiteout || e.Path != "Files/"+longName {
					t.Errorf("whiteout = %v %q", e.Type, e.Path)
				}
			},
		},
		{
			name: "PAX global header skipped, ./ prefix, padding after the end",
			layer: fixture.NewLayer().Raw(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "x"}}, nil).
				Raw(&tar.Header{Name: "./Files/", Typeflag: tar.TypeDir}, nil).Raw(&tar.Header{Name: "./", Typeflag: tar.TypeDir}, nil),
			padded: 9216,
			check: func(t *testing.T, es []*wclayer.Entry) {
				if len(es) != 1 || es[0].Path != "Files" || es[0].TarName != "./Files/" {
					t.Errorf("entries %+v", es)
				}
			},
		},
		{
			name:  "same path twice, case-insensitively",
			layer: fixture.NewLayer().File("Files/a.txt", []byte("1")).File("Files/A.TXT", []byte("2")),
			check: func(t *testing.T, es []*wclayer.Entry) {
				if len(es) != 3 || es[2].Path != "Files/A.TXT" {
					t.Errorf("entries %+v", es)
				}
			},
		},
		{
			name: "records: attributes, SD, EAs, times",
			layer: fixture.NewLayer().File("Files/f", []byte("x"), fixture.WithAttributes(0x421), fixture.WithSD(fixture.SDSystemOnly),
				fixture.WithEA("B.NAME", []byte{1, 2, 3}), fixture.WithEA("A", nil), fixture.WithTimes(ct)).
				Raw(&tar.Header{Name: "Files/noattr", Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}, nil).
				Raw(&tar.Header{Name: "Files/dirattr", Typeflag: tar.TypeDir, PAXRecords: map[string]string{"MSWINDOWS.fileattr": "2"}}, nil),
			check: func(t *testing.T, es []*wclayer.Entry) {
				f := es[1]
				if f.Attributes != 0x21 {
					t.Errorf("attributes %#x, want 0x21 (reparse bit cleared on a file)", f.Attributes)
				}
				if !bytes.Equal(f.SecurityDescriptor, fixture.SDSystemOnly) {
					t.Errorf("SD differs")
				}
				wantEA := []byte{12, 0, 0, 0, 0, 1, 0, 0, 'A', 0, 0, 0, 0, 0, 0, 0, 0, 6, 3, 0, 'B', '.', 'N', 'A', 'M', 'E', 0, 1, 2, 3, 0, 0}
				if !bytes.Equal(f.ExtendedAttributes, wantEA) {
					t.Errorf("EAs\n got %v\nwant %v", f.ExtendedAttributes, wantEA)
				}
				wantFT := (ct.Unix()+11644473600)*10_000_000 + int64(ct.Nanosecond())/100
				if f.CreationTime != wantFT || f.LastWriteTime != wantFT || f.ChangeTime != wantFT || f.LastAccessTime != wantFT {
					t.Errorf("times %d %d %d %d, want %d", f.CreationTime, f.LastWriteTime, f.ChangeTime, f.LastAccessTime, wantFT)
				}
				if n := es[2]; n.Attributes != 0x20 || n.SecurityDescriptor != nil || n.CreationTime != 0 || n.LastWriteTime != 116444736000000000 {
					t.Errorf("no records: %+v", n)
				}
				if d := es[3]; d.Attributes != 0x12 {
					t.Errorf("dir attributes %#x, want 0x12", d.Attributes)
				}
			},
		},
		{
			name:  "base layer fixture",
			layer: fixture.BaseLayer(),
			opts:  []wclayer.Option{wclayer.WithBase(true)},
			check: func(t *testing.T, es []*wclayer.Entry) {
				types := map[wclayer.EntryType]int{}
				for _, e := range es {
					types[e.Type]++
				}
				for _, typ := range []wclayer.EntryType{wclayer.TypeFile, wclayer.TypeDir, wclayer.TypeSymlink, wclayer.TypeHardLink, wclayer.TypeStream} {
					if types[typ] == 0 {
						t.Errorf("no %v entries", typ)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		for _, c := range []fixture.Compression{fixture.Uncompressed, fixture.Gzip, fixture.Zstd} {
			t.Run(fmt.Sprintf("%s/%d", tt.name, c), func(t *testing.T) {
				plain := append(tt.layer.Bytes(fixture.Uncompressed), make([]byte, tt.padded)...)
				var blob bytes.Buffer
				if err := fixture.Compress(&blob, c, func(w io.Writer) error { _, err := w.Write(plain); return err }); err != nil {
					t.Fatal(err)
				}
				res, err := readLayer(blob.Bytes(), append([]wclayer.Option{wclayer.WithName("test")}, tt.opts...)...)
				if err != nil {
					t.Fatal(err)
				}
				if want := "sha256:" + sha(plain); res.diffID != want {
					t.Errorf("DiffID %s, want %s", res.diffID, want)
				}
				if res.stats.BytesOut != int64(len(plain)) || res.stats.BytesIn != int64(blob.Len()) || res.stats.Compression != wclayer.Compression(c) {
					t.Errorf("stats %+v: want %d out, %d in, compression %d", res.stats, len(plain), blob.Len(), c)
				}
				tt.check(t, res.entries)
			})
		}
	}
}

func utf16String(b []byte) string {
	u := make([]rune, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, rune(binary.LittleEndian.Uint16(b[i:])))
	}
	return string(u)
}

func TestReaderData(t *testing.T) {
	l := fixture.BaseLayer()
	res, err := readLayer(l.Bytes(fixture.Gzip), wclayer.WithBase(true))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Files/Windows/System32/notepad.exe":                           sha(fixture.PE("notepad.exe", 32<<10)),
		"Files/Windows/System32/config/SOFTWARE":                       sha(fixture.RegistryHive(hivegen.Base("SOFTWARE"))),
		"Files/Windows/Temp/zeros.bin":                                 sha(make([]byte, fixture.ZeroFileSize)),
		"Files/Users/Public/Downloads/setup.exe:Zone.Identifier:$DATA": sha([]byte("[ZoneTransfer]\r\nZoneId=3\r\n")),
	}
	for name, w := range want {
		if got := res.data[name]; got != w {
			t.Errorf("%s: data sha256 %s, want %s", name, got, w)
		}
	}
	var files, data int64
	for _, e := range res.entries {
		if e.Type == wclayer.TypeFile {
			files++
		}
		data += e.Size
	}
	if res.stats.Files != files || res.stats.DataBytes != data || res.stats.Count(wclayer.TypeFile) != files {
		t.Errorf("stats %+v, want %d files, %d data bytes", res.stats, files, data)
	}
}

func TestDiffIDBeforeEOF(t *testing.T) {
	r, err := wclayer.NewReader(bytes.NewReader(fixture.AppLayer(1).Bytes(fixture.Gzip)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if d, err := r.DiffID(); err == nil {
		t.Errorf("DiffID before EOF = %q, want an error", d)
	}
}

func TestReaderErrors(t *testing.T) {
	big := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	sdRec := func(v string) *tar.Header {
		h := hdr("Files/f", tar.TypeReg, 0)
		h.PAXRecords = map[string]string{"MSWINDOWS.rawsd": v}
		return h
	}
	rec := func(name, k, v string) *tar.Header {
		h := hdr(name, tar.TypeReg, 0)
		h.PAXRecords = map[string]string{k: v}
		return h
	}
	deepName := "Files"
	for len(deepName) < 33000 {
		deepName += "/" + strings.Repeat("d", 200)
	}
	badSD := append([]byte{}, fixture.SDAdminsFull...)
	badSD[0] = 2
	tests := []struct {
		name  string
		layer *fixture.Layer
		patch func([]byte)
		opts  []wclayer.Option
		kind  error
		entry string // the tar name the error must name
		text  string // a fragment of the message
	}{
		{"dotdot", fixture.NewLayer().Raw(hdr("Files/../../x", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrPathTraversal, "Files/../../x", `".."`},
		{"backslash dotdot", fixture.NewLayer().Raw(hdr(`Files\..\..\x`, tar.TypeReg, 0), nil), nil, nil, wclayer.ErrPathTraversal, `Files\..\..\x`, `".."`},
		{"absolute", fixture.NewLayer().Raw(hdr("/Files/x", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrPathTraversal, "/Files/x", "absolute"},
		{"drive letter", fixture.NewLayer().Raw(hdr(`C:\Files\x`, tar.TypeReg, 0), nil), nil, nil, wclayer.ErrPathTraversal, `C:\Files\x`, "drive letter"},
		{"device path", fixture.NewLayer().Raw(hdr(`\\?\C:\x`, tar.TypeReg, 0), nil), nil, nil, wclayer.ErrPathTraversal, `\\?\C:\x`, "device path"},
		{"invalid UTF-8", fixture.NewLayer().Raw(hdr("Files/aXb", tar.TypeReg, 0), nil), func(b []byte) { b[bytes.Index(b, []byte("Files/aXb"))+7] = 0xff }, nil, wclayer.ErrInvalidName, "Files/a\xffb", "UTF-8"},
		{"NUL in a PAX path", fixture.NewLayer().File("Files/ok", nil).Raw(hdr("Files/éXb", tar.TypeReg, 0), nil), func(b []byte) { replaceOnce(t, b, "éXb", "é\x00b") }, nil, wclayer.ErrBadRecord, "", `after entry "Files/ok"`},
		{"component too long", fixture.NewLayer().Raw(hdr("Files/"+strings.Repeat("x", 256), tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/" + strings.Repeat("x", 256), "256 UTF-16 units exceeds 255"},
		{"component too long in UTF-16", fixture.NewLayer().Raw(hdr("Files/"+strings.Repeat("\U0001F600", 128), tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/" + strings.Repeat("\U0001F600", 128), "256 UTF-16"},
		{"path too long", fixture.NewLayer().Raw(hdr(deepName, tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, deepName, "exceeds 32767"},
		{"directory name too long", fixture.NewLayer().Raw(hdr("Files/"+strings.Repeat("x", 256)+"/f", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/" + strings.Repeat("x", 256) + "/f", "256 UTF-16 units exceeds 255"},
		{"file name too long, with a stream", fixture.NewLayer().Raw(hdr("Files/"+strings.Repeat("x", 256)+":s:$DATA", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/" + strings.Repeat("x", 256) + ":s:$DATA", "file name of 256 UTF-16 units exceeds 255"},
		{"stream name too long", fixture.NewLayer().File("Files/a", nil).Raw(hdr("Files/a:"+strings.Repeat("s", 256)+":$DATA", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/a:" + strings.Repeat("s", 256) + ":$DATA", "stream name of 256 UTF-16 units exceeds 255"},
		{"whiteout of a name too long", fixture.NewLayer().Raw(hdr("Files/.wh."+strings.Repeat("x", 256), tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/.wh." + strings.Repeat("x", 256), "file name of 256 UTF-16 units exceeds 255"},
		{"hard link target name too long", fixture.NewLayer().HardLink("Files/l", "Files/"+strings.Repeat("x", 256)), nil, nil, wclayer.ErrInvalidName, "Files/l", `hard link target "Files/xxxxxxxxxx`},
		{"empty component", fixture.NewLayer().Raw(hdr("Files//x", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files//x", "empty path component"},
		{"bad base64 SD", fixture.NewLayer().Raw(sdRec("!!notbase64"), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "MSWINDOWS.rawsd: bad base64"},
		{"SD too large", fixture.NewLayer().Raw(sdRec(big(70000)), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "exceeds 65535"},
		{"SD bad revision", fixture.NewLayer().Raw(sdRec(base64.StdEncoding.EncodeToString(badSD)), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "revision 2"},
		{"SDDL record", fixture.NewLayer().Raw(rec("Files/f", "MSWINDOWS.sd", "O:BAG:SY"), nil), nil, nil, wclayer.ErrUnsupported, "Files/f", "SDDL"},
		{"bad base64 EA", fixture.NewLayer().Raw(rec("Files/f", "MSWINDOWS.xattr.X", "%%"), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "MSWINDOWS.xattr.X: bad base64"},
		{"EA too large", fixture.NewLayer().Raw(rec("Files/f", "MSWINDOWS.xattr.X", big(70000)), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "exceeds 65535"},
		{"EA name too long", fixture.NewLayer().Raw(rec("Files/f", "MSWINDOWS.xattr."+strings.Repeat("N", 255), ""), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "want 1 to 254"},
		{"bad fileattr", fixture.NewLayer().Raw(rec("Files/f", "MSWINDOWS.fileattr", "0x20"), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "MSWINDOWS.fileattr"},
		{"directory attribute on a file", fixture.NewLayer().Raw(rec("Files/f", "MSWINDOWS.fileattr", "16"), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "as a directory"},
		{"bad creation time", fixture.NewLayer().Raw(rec("Files/f", "LIBARCHIVE.creationtime", "yesterday"), nil), nil, nil, wclayer.ErrBadRecord, "Files/f", "LIBARCHIVE.creationtime"},
		{"stream without its file", fixture.NewLayer().File("Files/a", nil).Stream("Files/b", "s", []byte("x")), nil, nil, wclayer.ErrOrphanStream, "Files/b:s:$DATA", "neither earlier"},
		{"stream of a whited-out parent file", fixture.NewLayer().Whiteout("Files/b").Stream("Files/b", "s", nil), nil, []wclayer.Option{wclayer.WithParentLookup(func(string) bool { return true })}, wclayer.ErrOrphanStream, "Files/b:s:$DATA", "neither earlier"},
		{"stream type", fixture.NewLayer().File("Files/a", nil).Raw(hdr("Files/a:s:$INDEX_ALLOCATION", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrUnsupported, "Files/a:s:$INDEX_ALLOCATION", "only $DATA"},
		{"stream without type", fixture.NewLayer().File("Files/a", nil).Raw(hdr("Files/a:s", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/a:s", "file:stream:$DATA"},
		{"colon in a directory entry", fixture.NewLayer().Raw(&tar.Header{Name: "Files/a:b/", Typeflag: tar.TypeDir}, nil), nil, nil, wclayer.ErrInvalidName, "Files/a:b/", "colon"},
		{"empty whiteout", fixture.NewLayer().Raw(hdr("Files/.wh.", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/.wh.", "whiteout of"},
		{"colon in a directory", fixture.NewLayer().Raw(hdr("Files/a:b/c", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrInvalidName, "Files/a:b/c", "colon"},
		{"hard link to nothing", fixture.NewLayer().HardLink("Files/l", "Files/missing"), nil, nil, wclayer.ErrLinkTarget, "Files/l", "neither earlier"},
		{"hard link, parent lookup says no", fixture.NewLayer().HardLink("Files/l", "Files/missing"), nil, []wclayer.Option{wclayer.WithParentLookup(func(string) bool { return false })}, wclayer.ErrLinkTarget, "Files/l", "neither earlier"},
		{"hard link in a base layer ignores the lookup", fixture.NewLayer().HardLink("Files/l", "Files/x"), nil, []wclayer.Option{wclayer.WithBase(true), wclayer.WithParentLookup(func(string) bool { return true })}, wclayer.ErrLinkTarget, "Files/l", "neither earlier"},
		{"hard link to a directory", fixture.NewLayer().Dir("Files/d").HardLink("Files/l", "Files/d"), nil, nil, wclayer.ErrLinkTarget, "Files/l", "is a directory"},
		{"hard link traversal", fixture.NewLayer().HardLink("Files/l", "Files/../../etc/passwd"), nil, nil, wclayer.ErrPathTraversal, "Files/l", "hard link target"},
		{"entry under a file", fixture.NewLayer().File("Files/f", nil).NoAutoDirs().File("Files/F/x", nil), nil, nil, wclayer.ErrNotDirectory, "Files/F/x", "is a file"},
		{"entry under a symlink", fixture.NewLayer().Symlink("Files/s", `C:\x`).NoAutoDirs().Dir("Files/s/d"), nil, nil, wclayer.ErrNotDirectory, "Files/s/d", "is a symlink"},
		{"opaque whiteout", fixture.NewLayer().Raw(hdr("Files/d/.wh..wh..opq", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrUnsupported, "Files/d/.wh..wh..opq", "opaque whiteout"},
		{"top-level layout", fixture.NewLayer().Raw(hdr("layout", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrArea, "layout", "not one of Files, Hives, UtilityVM"},
		{"other area", fixture.NewLayer().Raw(hdr("Windows/x", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrArea, "Windows/x", `"Windows"`},
		{"whiteout of an area", fixture.NewLayer().Raw(hdr(".wh.Files", tar.TypeReg, 0), nil), nil, nil, wclayer.ErrArea, ".wh.Files", "whole Files area"},
		{"device node", fixture.NewLayer().Raw(&tar.Header{Name: "Files/dev", Typeflag: tar.TypeChar}, nil), nil, nil, wclayer.ErrUnsupported, "Files/dev", "entry type"},
		{"file size limit", fixture.NewLayer().File("Files/big", make([]byte, 4096)), nil, []wclayer.Option{wclayer.WithLimits(wclayer.Limits{MaxFileSize: 4095})}, wclayer.ErrLimit, "Files/big", "MaxFileSize=4095"},
		{"total size limit", fixture.NewLayer().File("Files/a", make([]byte, 3000)).File("Files/b", make([]byte, 3000)), nil, []wclayer.Option{wclayer.WithLimits(wclayer.Limits{MaxTotalSize: 5000})}, wclayer.ErrLimit, "Files/a", "uncompressed layer exceeds the limit MaxTotalSize=5000"},
		{"declared size limit", fixture.NewLayer().File("Files/a", make([]byte, 3000)).Raw(hdr("Files/b", tar.TypeReg, 1<<20), make([]byte, 1<<20)), nil, []wclayer.Option{wclayer.WithLimits(wclayer.Limits{MaxTotalSize: 1 << 19})}, wclayer.ErrLimit, "Files/b", "layer data exceeds the limit MaxTotalSize=524288"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := rawTar(t, tt.layer, tt.patch)
			_, err := readLayer(b, append([]wclayer.Option{wclayer.WithName("sha256:feed")}, tt.opts...)...)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q is not %v", err, tt.kind)
			}
			le := asLayerError(t, err)
			if le.Layer != "sha256:feed" || le.Entry != tt.entry {
				t.Errorf("error names layer %q entry %q, want %q %q", le.Layer, le.Entry, "sha256:feed", tt.entry)
			}
			msg := err.Error()
			named := fmt.Sprintf("entry %q", tt.entry)
			if len(tt.entry) > 100 {
				named = fmt.Sprintf("entry %q", tt.entry[:6])
				named = named[:len(named)-1]
			}
			if !strings.HasPrefix(msg, "layer sha256:feed") || (tt.entry != "" && !strings.Contains(msg, named)) {
				t.Errorf("message %q does not name the layer and entry", msg)
			}
			if !strings.Contains(msg, tt.text) {
				t.Errorf("message %q does not say %q", msg, tt.text)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("message spans lines: %q", msg)
			}
		})
	}
}

// flip returns a copy of b with byte i inverted.
func flip(b []byte, i int) []byte {
	c := append([]byte{}, b...)
	c[i] ^= 0xff
	return c
}

func TestCorruptCompression(t *testing.T) {
	// Mostly incompressible data, so a flipped payload byte decodes to
	// garbage file content that only the checksum can catch.
	l := fixture.NewLayer().File("Files/a.dll", fixture.PE("a", 256<<10)).File("Files/b.txt", []byte("b"))
	gz := l.Bytes(fixture.Gzip)
	zs := l.Bytes(fixture.Zstd)
	tests := []struct {
		name string
		blob []byte
	}{
		{"gzip payload", flip(gz, len(gz)/2)},
		{"gzip CRC trailer", flip(gz, len(gz)-6)},
		{"gzip size trailer", flip(gz, len(gz)-2)},
		{"gzip truncated", gz[:len(gz)-4]},
		{"gzip header", flip(gz, 2)},
		{"zstd payload", flip(zs, len(zs)/2)},
		{"zstd checksum trailer", flip(zs, len(zs)-2)},
		{"zstd truncated", zs[:len(zs)-10]},
		{"garbage after gzip", append(append([]byte{}, gz...), "garbage!"...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readLayer(tt.blob, wclayer.WithName("L"))
			if err == nil {
				t.Fatal("corrupt layer read without error")
			}
			le := asLayerError(t, err)
			if !errors.Is(err, wclayer.ErrCorrupt) {
				t.Errorf("error %q is not ErrCorrupt", err)
			}
			if le.Layer != "L" || !strings.HasPrefix(err.Error(), "layer L") {
				t.Errorf("error %q does not name the layer", err)
			}
		})
	}
}

func TestRatioLimit(t *testing.T) {
	bomb := fixture.NewLayer().File("Files/zeros", make([]byte, 8<<20)).Bytes(fixture.Gzip)
	lim := wclayer.Limits{MaxRatio: 50, RatioAfter: 1 << 20}
	_, err := readLayer(bomb, wclayer.WithName("bomb"), wclayer.WithLimits(lim))
	if !errors.Is(err, wclayer.ErrLimit) || !strings.Contains(fmt.Sprint(err), "MaxRatio=50") {
		t.Fatalf("bomb error = %v, want ErrLimit naming MaxRatio=50", err)
	}
	if le := asLayerError(t, err); le.Entry != "Files/zeros" {
		t.Errorf("bomb error names entry %q, want Files/zeros", le.Entry)
	}
	// The same layer passes with the default limits (ratio only past 1 GiB).
	if _, err := readLayer(bomb); err != nil {
		t.Errorf("default limits: %v", err)
	}
}

type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestSourceErrorIsNotALayerError(t *testing.T) {
	boom := errors.New("connection reset")
	for _, c := range []fixture.Compression{fixture.Uncompressed, fixture.Gzip, fixture.Zstd} {
		b := fixture.BaseLayer().Bytes(c)
		r, err := wclayer.NewReader(&failingReader{r: bytes.NewReader(b), n: len(b) / 2, err: boom})
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = r.Next()
			if err == nil {
				_, err = io.Copy(io.Discard, r)
			}
		}
		var le *wclayer.Error
		if !errors.Is(err, boom) || errors.As(err, &le) {
			t.Errorf("%v: error %v: want the source error, not a *wclayer.Error", c, err)
		}
	}
}

func TestAreas(t *testing.T) {
	tests := []struct {
		path  string
		area  string
		delta bool
	}{
		{"Files/Windows", wclayer.AreaFiles, false},
		{"files", wclayer.AreaFiles, false},
		{"Hives/Software_Delta", wclayer.AreaHives, true},
		{"HIVES/SYSTEM_DELTA", wclayer.AreaHives, true},
		{"Hives/SOFTWARE_BASE", wclayer.AreaHives, false},
		{"Hives/x/y_Delta", wclayer.AreaHives, false},
		{"UtilityVM/Files/EFI", wclayer.AreaUtilityVM, false},
		{"layout", "", false},
		{"Filesx/a", "", false},
		// Through the CIM's upcase table long s is not S (strings.EqualFold
		// says it is): "Fileſ" would be a top-level directory of its own.
		{"File\u017f/a", "", false},
		{"Hive\u017f/Software_Delta", "", false},
	}
	for _, tt := range tests {
		if got := wclayer.Area(tt.path); got != tt.area {
			t.Errorf("Area(%q) = %q, want %q", tt.path, got, tt.area)
		}
		if got := wclayer.IsDeltaHive(tt.path); got != tt.delta {
			t.Errorf("IsDeltaHive(%q) = %v, want %v", tt.path, got, tt.delta)
		}
	}
	res, err := readLayer(fixture.DeltaHiveLayer().Bytes(fixture.Uncompressed))
	if err != nil {
		t.Fatal(err)
	}
	if res.stats.DeltaHives != 5 {
		t.Errorf("DeltaHives = %d, want 5", res.stats.DeltaHives)
	}
}

func TestTrailingData(t *testing.T) {
	plain := fixture.NewLayer().File("Files/a", []byte("a")).Bytes(fixture.Uncompressed)
	tests := []struct {
		name    string
		suffix  []byte
		wantErr bool
	}{
		{"zero padding", make([]byte, 20000), false},
		{"non-zero byte after padding", append(make([]byte, 700), 1), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append(append([]byte{}, plain...), tt.suffix...)
			res, err := readLayer(b, wclayer.WithName("L"))
			if tt.wantErr {
				if !errors.Is(err, wclayer.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), "non-zero data after the end") {
					t.Fatalf("error %v, want ErrCorrupt about data after the end", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.diffID != "sha256:"+sha(b) {
				t.Errorf("DiffID %s does not cover the padding", res.diffID)
			}
		})
	}
}

func TestCloseStopsDecompression(t *testing.T) {
	for _, c := range []fixture.Compression{fixture.Gzip, fixture.Zstd} {
		blob := fixture.BaseLayer().Bytes(c)
		before := runtime.NumGoroutine()
		r, err := wclayer.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if _, err := r.Next(); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("%v: Next after Close = %v, want an error", c, err)
		}
		// The decompression goroutines exit once they see the close.
		for i := 0; runtime.NumGoroutine() > before; i++ {
			if i == 500 {
				t.Fatalf("%v: %d goroutines after Close, %d before", c, runtime.NumGoroutine(), before)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestDetectCompression(t *testing.T) {
	layer := fixture.BaseLayer()
	for fc, want := range map[fixture.Compression]wclayer.Compression{
		fixture.Uncompressed: wclayer.Uncompressed, fixture.Gzip: wclayer.Gzip, fixture.Zstd: wclayer.Zstd,
	} {
		if got := wclayer.DetectCompression(layer.Bytes(fc)[:4]); got != want {
			t.Errorf("DetectCompression of a %s layer = %s", want, got)
		}
	}
	for _, head := range [][]byte{nil, {0x1f}, []byte("BZh91")} {
		if got := wclayer.DetectCompression(head); got != wclayer.Uncompressed {
			t.Errorf("DetectCompression(%q) = %s, want uncompressed", head, got)
		}
	}
}
