package wclayer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/fsview"
	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func openers(ls []*fixture.Layer, c fixture.Compression) []func() (io.ReadCloser, error) {
	var out []func() (io.ReadCloser, error)
	for _, l := range ls {
		b := l.Bytes(c)
		out = append(out, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	}
	return out
}

func viewMap(es []fsview.Entry) map[string]fsview.Entry {
	m := map[string]fsview.Entry{}
	for _, e := range es {
		m[e.Path] = e
	}
	return m
}

func TestMergeViewChain(t *testing.T) {
	view, err := wclayer.MergeView(context.Background(), openers(fixture.Chain(3), fixture.Zstd))
	if err != nil {
		t.Fatal(err)
	}
	m := viewMap(view)
	b64 := base64.StdEncoding.EncodeToString
	present := []struct {
		path, typ, sha, sd string
	}{
		{"Files", fsview.TypeDir, "", ""},
		// App1 replaced notepad.exe with a differently spelled name.
		{"Files/Windows/System32/NOTEPAD.EXE", fsview.TypeFile, sha(fixture.PE("notepad-v1", 40<<10)), b64(fixture.SDTrustedInstaller)},
		// The base's hard links keep the original content and SD.
		{"Files/Windows/notepad.exe", fsview.TypeFile, sha(fixture.PE("notepad.exe", 32<<10)), b64(fixture.SDTrustedInstaller)},
		// Cross-layer hard links (App1, App2 -> base cmd.exe).
		{"Files/Program Files/App1/cmd-copy.exe", fsview.TypeFile, sha(fixture.PE("cmd.exe", 64<<10)), b64(fixture.SDTrustedInstaller)},
		{"Files/Program Files/App2/cmd-copy.exe", fsview.TypeFile, sha(fixture.PE("cmd.exe", 64<<10)), b64(fixture.SDTrustedInstaller)},
		// App2 modified hosts.
		{"Files/Windows/System32/drivers/etc/hosts", fsview.TypeFile, sha([]byte("127.0.0.1 localhost app2\r\n")), b64(fixture.SDAdminsFull)},
		{"Files/Users/All Users", fsview.TypeSymlink, "", b64(fixture.SDSystemOnly)},
		{fixture.DeepPath, fsview.TypeFile, sha([]byte("deep\r\n")), b64(fixture.SDAdminsFull)},
		{"Files/Windows/System32/NTDLL.dll", fsview.TypeFile, sha(fixture.PE("ntdll-v2", 64<<10)), b64(fixture.SDTrustedInstaller)},
	}
	for _, p := range present {
		e, ok := m[p.path]
		if !ok {
			t.Errorf("%s: missing", p.path)
			continue
		}
		if e.Type != p.typ || e.SHA256 != p.sha || (p.sd != "" && e.SD != p.sd) {
			t.Errorf("%s: got %s sha %s sd %.20s, want %s sha %s sd %.20s", p.path, e.Type, e.SHA256, e.SD, p.typ, p.sha, p.sd)
		}
	}
	for _, p := range []string{
		"Files/Windows/System32/notepad.exe",      // replaced by NOTEPAD.EXE
		"Files/Windows/System32/notepad-link.exe", // whited out by App1
		"Files/Windows/Temp/zeros.bin",            // whited out by App1
		"Files/Users/Public/Documents",            // subtree whited out by App2
		"Files/Users/Public/Documents/résumé.txt", // ... with its contents
		fixture.LongNamePath,
	} {
		if _, ok := m[p]; ok {
			t.Errorf("%s: present, want deleted", p)
		}
	}
	if _, ok := m["Files/Windows/Temp"]; !ok {
		t.Errorf("Files/Windows/Temp: missing (only its file was deleted)")
	}
	if e := m["Files/Program Files/App1/config.json"]; len(e.Streams) != 1 || e.Streams[0].Name != "Zone.Identifier" || e.Streams[0].SHA256 != sha([]byte("[ZoneTransfer]\r\nZoneId=1\r\n")) {
		t.Errorf("config.json streams %+v", e.Streams)
	}
	link := m["Files/Users/All Users"]
	rp, _ := base64.StdEncoding.DecodeString(link.Reparse)
	if target, mount, err := wclayer.DecodeReparsePoint(rp); err != nil || target != `C:\ProgramData` || mount || link.Attributes&0x400 == 0 {
		t.Errorf("All Users: %q %v %v attrs %#x", target, mount, err, link.Attributes)
	}
	for _, e := range view {
		if e.Path == "" {
			t.Errorf("the root is listed")
		}
		if e.Type == fsview.TypeDir && e.Attributes&0x10 == 0 {
			t.Errorf("%s: dir without 0x10", e.Path)
		}
	}
	if !sortedByPath(view) {
		t.Errorf("view is not sorted by path")
	}
}

func sortedByPath(es []fsview.Entry) bool {
	for i := 1; i < len(es); i++ {
		if es[i-1].Path >= es[i].Path {
			return false
		}
	}
	return true
}

func TestMergeViewSemantics(t *testing.T) {
	base := fixture.NewLayer().
		Dir("Files").Dir("Files/Dir").File("Files/Dir/a.txt", []byte("a0")).
		Dir("Files/Dir/sub").File("Files/Dir/sub/b.txt", []byte("b0")).
		File("Files/Dir/f", []byte("file")).Dir("Files/Keep").File("Files/Keep/k", []byte("k"))
	// Layer 1: no directory entries: entries land in the existing, differently
	// spelled directory; a case-different replacement; a dir replaces a file.
	l1 := fixture.NewLayer().NoAutoDirs().
		File("Files/DIR/A.txt", []byte("a1")).
		Dir("Files/dir/F").
		File("Files/dir/F/inner", []byte("in")).
		Dir("FILES/KEEP", fixture.WithAttributes(0x12))
	// Layer 2: a case-insensitive whiteout of a subtree and a cross-layer
	// hard link spelled differently from its target.
	l2 := fixture.NewLayer().NoAutoDirs().
		Whiteout("files/dir/SUB").
		HardLink("Files/link.txt", "files/dir/a.TXT").
		Whiteout("Files/Dir/nothing-here")
	view, err := wclayer.MergeView(context.Background(), openers([]*fixture.Layer{base, l1, l2}, fixture.Uncompressed))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range view {
		paths = append(paths, e.Path)
	}
	// "FILES/KEEP" re-spells KEEP (the replaced entry) but not its parent.
	want := []string{"Files", "Files/Dir", "Files/Dir/A.txt", "Files/Dir/F", "Files/Dir/F/inner", "Files/KEEP", "Files/KEEP/k", "Files/link.txt"}
	if strings.Join(paths, "|") != strings.Join(want, "|") {
		t.Fatalf("paths\n got %v\nwant %v", paths, want)
	}
	m := viewMap(view)
	if e := m["Files/Dir/A.txt"]; e.SHA256 != sha([]byte("a1")) {
		t.Errorf("A.txt: %s, want layer 1's content", e.SHA256)
	}
	if e := m["Files/link.txt"]; e.SHA256 != sha([]byte("a1")) || e.Type != fsview.TypeFile || e.Size != 2 {
		t.Errorf("link.txt: %+v, want A.txt's content", e)
	}
	if e := m["Files/Dir/F"]; e.Type != fsview.TypeDir {
		t.Errorf("F: %s, want dir (replaced the file)", e.Type)
	}
	if e := m["Files/KEEP"]; e.Attributes != 0x12 {
		t.Errorf("KEEP attributes %#x, want the replacing entry's 0x12", e.Attributes)
	}
}

// TestMergeViewNamesAsACIMCompares: names are the same entry exactly when
// the CIM writer's upcase table says so. "I.txt" and "ı.txt" (U+0131) are
// two entries in a CIM, so they are two in the merged view; "a.txt" and
// "A.TXT" are one, the later spelling and content winning.
func TestMergeViewNamesAsACIMCompares(t *testing.T) {
	layer := fixture.NewLayer().Dir("Files").
		File("Files/I.txt", []byte("dotted")).File("Files/\u0131.txt", []byte("dotless")).
		File("Files/\u017f", []byte("long s")).File("Files/S", []byte("S")).
		File("Files/\u00b5", []byte("micro")).File("Files/\u039c", []byte("Mu")).
		File("Files/a.txt", []byte("a")).File("Files/A.TXT", []byte("A"))
	view, err := wclayer.MergeView(context.Background(), openers([]*fixture.Layer{layer}, fixture.Uncompressed))
	if err != nil {
		t.Fatal(err)
	}
	m := viewMap(view)
	for p, content := range map[string]string{
		"Files/I.txt": "dotted", "Files/\u0131.txt": "dotless",
		"Files/\u017f": "long s", "Files/S": "S",
		"Files/\u00b5": "micro", "Files/\u039c": "Mu",
		"Files/A.TXT": "A",
	} {
		if e, ok := m[p]; !ok || e.SHA256 != sha([]byte(content)) {
			t.Errorf("%q: %+v, want its own entry with %q", p, e, content)
		}
	}
	if len(view) != 8 {
		t.Errorf("%d entries, want Files and 7 files: %v", len(view), view)
	}
}

func TestMergeViewErrors(t *testing.T) {
	base := fixture.NewLayer().File("Files/a", []byte("a"))
	tests := []struct {
		name   string
		layers []*fixture.Layer
		kind   error
		layer  string
	}{
		{"link to a file deleted in the same layer", []*fixture.Layer{base, fixture.NewLayer().Whiteout("Files/a").HardLink("Files/b", "Files/a")}, wclayer.ErrLinkTarget, "#1"},
		{"stream of a deleted file", []*fixture.Layer{base, fixture.NewLayer().NoAutoDirs().Whiteout("Files/a"), fixture.NewLayer().Stream("Files/a", "s", nil)}, wclayer.ErrOrphanStream, "#2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wclayer.MergeView(context.Background(), openers(tt.layers, fixture.Gzip))
			if !errors.Is(err, tt.kind) {
				t.Fatalf("error %v, want %v", err, tt.kind)
			}
			if le := asLayerError(t, err); le.Layer != tt.layer {
				t.Errorf("error names layer %q, want %q", le.Layer, tt.layer)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := wclayer.MergeView(ctx, openers([]*fixture.Layer{base}, fixture.Gzip)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
