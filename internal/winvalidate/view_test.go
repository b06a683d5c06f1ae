package winvalidate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/fsview"
	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// fakeFile is one path of an in-memory volume, held as BackupRead would
// return it.
type fakeFile struct {
	basic   fileBasic
	streams []fakeStream
	openErr error
}

type fakeStream struct {
	kind streamKind
	name string
	data []byte
}

type fakeVolume struct {
	files map[string]*fakeFile // by relative path
	opens int
}

func (v *fakeVolume) readDir(_ context.Context, rel string) ([]string, error) {
	var names []string
	prefix := rel + "/"
	if rel == "" {
		prefix = ""
	}
	for p := range v.files {
		if rest, ok := strings.CutPrefix(p, prefix); ok && rest != "" && !strings.Contains(rest, "/") {
			names = append(names, rest)
		}
	}
	return names, nil
}

func (v *fakeVolume) open(_ context.Context, rel string) (fileBasic, func() (*backupStream, error), func() error, error) {
	f, ok := v.files[rel]
	if !ok {
		return fileBasic{}, nil, nil, errors.New("not found")
	}
	if f.openErr != nil {
		return fileBasic{}, nil, nil, f.openErr
	}
	v.opens++
	i := 0
	next := func() (*backupStream, error) {
		if i == len(f.streams) {
			return nil, io.EOF
		}
		s := f.streams[i]
		i++
		return &backupStream{kind: s.kind, name: s.name, r: bytes.NewReader(s.data)}, nil
	}
	return f.basic, next, func() error { v.opens--; return nil }, nil
}

// volumeFromLayer fills a fake volume from a (base) layer tar the way a
// mounted CIM of it would present it.
func volumeFromLayer(t *testing.T, tarball []byte) *fakeVolume {
	t.Helper()
	r, err := wclayer.NewReader(bytes.NewReader(tarball), wclayer.WithBase(true))
	if err != nil {
		t.Fatal(err)
	}
	v := &fakeVolume{files: map[string]*fakeFile{}}
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch e.Type {
		case wclayer.TypeStream:
			data, _ := io.ReadAll(r)
			owner := v.files[e.Path]
			owner.streams = append(owner.streams, fakeStream{kind: streamAltData, name: ":" + e.StreamName + ":$DATA", data: data})
			continue
		case wclayer.TypeHardLink:
			target := *v.files[e.Linkname]
			v.files[e.Path] = &target
			continue
		}
		f := &fakeFile{basic: fileBasic{attributes: e.Attributes, lastWriteTime: e.LastWriteTime}}
		if e.SecurityDescriptor != nil {
			f.streams = append(f.streams, fakeStream{kind: streamSecurity, data: e.SecurityDescriptor})
		}
		if e.ExtendedAttributes != nil {
			f.streams = append(f.streams, fakeStream{kind: streamEA, data: e.ExtendedAttributes})
		}
		switch e.Type {
		case wclayer.TypeSymlink:
			f.streams = append(f.streams, fakeStream{kind: streamReparse, data: e.ReparseData})
		case wclayer.TypeFile:
			data, _ := io.ReadAll(r)
			f.basic.endOfFile = int64(len(data))
			if len(bytes.Trim(data, "\x00")) == 0 {
				// All zeros: present it as a sparse file without blocks.
				break
			}
			f.streams = append(f.streams, fakeStream{kind: streamData, data: data})
		}
		v.files[e.Path] = f
	}
	return v
}

func TestWalkMatchesMergeView(t *testing.T) {
	ctx := context.Background()
	tarball := fixture.BaseLayer().Bytes(fixture.Uncompressed)
	want, err := wclayer.MergeView(ctx, []func() (io.ReadCloser, error){
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarball)), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	v := volumeFromLayer(t, tarball)
	got, err := walk(ctx, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := fsview.Compare(want, got, fsview.CompareOptions{}); len(diffs) > 0 {
		for _, d := range diffs {
			t.Error(d)
		}
	}
	if v.opens != 0 {
		t.Errorf("%d handles left open", v.opens)
	}
	// The comparison must be able to fail: one changed byte shows up.
	v.files["Files/Windows/System32/notepad.exe"].streams = append(v.files["Files/Windows/System32/notepad.exe"].streams, fakeStream{kind: streamData, data: []byte{1}})
	got, _ = walk(ctx, v, nil)
	if diffs := fsview.Compare(want, got, fsview.CompareOptions{}); len(diffs) == 0 {
		t.Error("a changed file went unnoticed")
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func le64(n int64) []byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	return b[:]
}

func TestReadEntry(t *testing.T) {
	emptySHA := sha("")
	tests := []struct {
		name   string
		file   *fakeFile
		want   fsview.Entry
		errHas string
	}{
		{
			name: "empty file",
			file: &fakeFile{basic: fileBasic{attributes: 0x20}},
			want: fsview.Entry{Path: "f", Type: "file", Attributes: 0x20, SHA256: emptySHA},
		},
		{
			name: "sparse blocks and trailing zeros",
			file: &fakeFile{basic: fileBasic{attributes: 0x220, endOfFile: 8}, streams: []fakeStream{
				{kind: streamSparse, data: append(le64(2), 'a', 'b')},
				{kind: streamSparse, data: append(le64(5), 'c')},
			}},
			// content "\0\0ab\0c\0\0"
			want: fsview.Entry{Path: "f", Type: "file", Attributes: 0x220, Size: 8, SHA256: sha("\x00\x00ab\x00c\x00\x00")},
		},
		{
			name: "overlapping sparse blocks",
			file: &fakeFile{basic: fileBasic{attributes: 0x220}, streams: []fakeStream{
				{kind: streamSparse, data: append(le64(4), 'a', 'b')},
				{kind: streamSparse, data: append(le64(5), 'c')},
			}},
			errHas: "offset 5 before 6",
		},
		{
			name: "streams sorted, other streams ignored",
			file: &fakeFile{basic: fileBasic{attributes: 0x20}, streams: []fakeStream{
				{kind: streamAltData, name: ":zeta:$DATA", data: []byte("z")},
				{kind: streamOther, data: []byte("objectid")},
				{kind: streamAltData, name: ":Alpha:$DATA", data: nil},
			}},
			want: fsview.Entry{Path: "f", Type: "file", Attributes: 0x20, SHA256: emptySHA, Streams: []fsview.Stream{
				{Name: "Alpha", Size: 0, SHA256: emptySHA},
				{Name: "zeta", Size: 1, SHA256: sha("z")},
			}},
		},
		{
			name:   "bad stream name",
			file:   &fakeFile{basic: fileBasic{attributes: 0x20}, streams: []fakeStream{{kind: streamAltData, name: "zeta"}}},
			errHas: `alternate stream name "zeta"`,
		},
		{
			name: "directory symlink is a symlink with its reparse buffer",
			file: &fakeFile{basic: fileBasic{attributes: 0x410}, streams: []fakeStream{{kind: streamReparse, data: []byte{0xc, 0, 0, 0xa0}}, {kind: streamSecurity, data: []byte{1, 0}}}},
			want: fsview.Entry{Path: "f", Type: "symlink", Attributes: 0x410, Reparse: "DAAAoA==", SD: "AQA="},
		},
		{
			name:   "open fails",
			file:   &fakeFile{openErr: errors.New("access denied")},
			errHas: `open "f": access denied`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &fakeVolume{files: map[string]*fakeFile{"f": tt.file}}
			got, err := readEntry(context.Background(), v, "f")
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := fsview.Compare([]fsview.Entry{tt.want}, []fsview.Entry{got}, fsview.CompareOptions{}); len(d) > 0 {
				t.Errorf("entry = %+v, differences %v", got, d)
			}
		})
	}
}

func TestWalkSkipsAndDoesNotFollowReparsePoints(t *testing.T) {
	v := &fakeVolume{files: map[string]*fakeFile{
		"Files":                       {basic: fileBasic{attributes: 0x10}},
		"Files/link":                  {basic: fileBasic{attributes: 0x410}},
		"Files/link/inside":           {basic: fileBasic{attributes: 0x20}},
		"System Volume Information":   {basic: fileBasic{attributes: 0x16}},
		"System Volume Information/x": {basic: fileBasic{attributes: 0x20}},
	}}
	got, err := walk(context.Background(), v, func(rel string) bool { return rel == "System Volume Information" })
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range got {
		paths = append(paths, e.Path)
	}
	sort.Strings(paths)
	if strings.Join(paths, ",") != "Files,Files/link" {
		t.Errorf("walked %v, want Files and Files/link only", paths)
	}
}

func TestWalkHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v := &fakeVolume{files: map[string]*fakeFile{"a": {basic: fileBasic{attributes: 0x20}}}}
	if _, err := walk(ctx, v, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func FuzzStreamName(f *testing.F) {
	for _, s := range []string{":Zone.Identifier:$DATA", "::$DATA", ":a:b:$DATA", "x", ":x:$DATA:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, err := streamName(raw)
		if err != nil {
			return
		}
		if ":"+name+":$DATA" != raw || name == "" || strings.ContainsAny(name, ":/\\") {
			t.Fatalf("streamName(%q) = %q", raw, name)
		}
	})
}
