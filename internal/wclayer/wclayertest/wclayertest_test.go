package wclayertest_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/wclayertest"
)

func TestDeterministic(t *testing.T) {
	for _, c := range []wclayertest.Compression{wclayertest.Uncompressed, wclayertest.Gzip, wclayertest.Zstd} {
		a, b := wclayertest.Chain(3), wclayertest.Chain(3)
		for i := range a {
			if !bytes.Equal(a[i].Bytes(c), b[i].Bytes(c)) {
				t.Errorf("compression %d: layer %d differs between two builds", c, i)
			}
		}
	}
	var x, y bytes.Buffer
	if err := wclayertest.Large(&x, 300, 3<<20, 7); err != nil {
		t.Fatal(err)
	}
	if err := wclayertest.Large(&y, 300, 3<<20, 7); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x.Bytes(), y.Bytes()) {
		t.Error("Large differs between two runs with one seed")
	}
}

func TestSD(t *testing.T) {
	tests := []struct {
		name  string
		sd    []byte
		owner string
		aces  int
	}{
		{"AdminsFull", wclayertest.SDAdminsFull, wclayertest.SIDAdministrators, 3},
		{"SystemOnly", wclayertest.SDSystemOnly, wclayertest.SIDSystem, 1},
		{"TrustedInstaller", wclayertest.SDTrustedInstaller, wclayertest.SIDTrustedInstaller, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sd := tt.sd
			if sd[0] != 1 || binary.LittleEndian.Uint16(sd[2:])&0x8004 != 0x8004 {
				t.Fatalf("header % x: want revision 1, self-relative, DACL present", sd[:4])
			}
			owner := binary.LittleEndian.Uint32(sd[4:])
			want, err := wclayertest.ParseSID(tt.owner)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sd[owner:int(owner)+len(want)], want) {
				t.Errorf("owner SID at %d differs", owner)
			}
			dacl := binary.LittleEndian.Uint32(sd[16:])
			size := binary.LittleEndian.Uint16(sd[dacl+2:])
			count := binary.LittleEndian.Uint16(sd[dacl+4:])
			if int(count) != tt.aces || int(dacl)+int(size) > len(sd) {
				t.Errorf("DACL: %d ACEs, size %d at %d of %d bytes", count, size, dacl, len(sd))
			}
			// Walk the ACEs: their sizes must add up to the ACL size.
			off := int(dacl) + 8
			for i := 0; i < int(count); i++ {
				off += int(binary.LittleEndian.Uint16(sd[off+2:]))
			}
			if off != int(dacl)+int(size) {
				t.Errorf("ACE sizes end at %d, ACL ends at %d", off, int(dacl)+int(size))
			}
		})
	}
	for _, bad := range []string{"", "S-2-5", "S-1-x", "S-1-5-99999999999"} {
		if _, err := wclayertest.ParseSID(bad); err == nil {
			t.Errorf("ParseSID(%q) succeeded", bad)
		}
	}
}

func TestFixturesRead(t *testing.T) {
	base := wclayertest.BaseLayer().Bytes(wclayertest.Uncompressed)
	r, err := wclayer.NewReader(bytes.NewReader(base), wclayer.WithBase(true))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]*wclayer.Entry{}
	data := map[string][]byte{}
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != wclayer.TypeStream {
			seen[e.Path] = e
		}
		if e.Type == wclayer.TypeFile {
			head := make([]byte, 4)
			n, _ := io.ReadFull(r, head)
			data[e.Path] = head[:n]
		}
	}
	for _, h := range wclayer.Hives {
		p := wclayer.RegFilesPath + "/" + h.Config
		if string(data[p]) != "regf" {
			t.Errorf("%s starts with %q, want regf", p, data[p])
		}
	}
	for _, p := range []string{"Files/Windows/System32/cmd.exe", "Files/Windows/System32/kernel32.dll", "UtilityVM/Files/EFI/Microsoft/Boot/bootmgfw.efi"} {
		if !strings.HasPrefix(string(data[p]), "MZ") {
			t.Errorf("%s starts with %q, want MZ", p, data[p])
		}
	}
	if e := seen[wclayertest.LongNamePath]; e == nil || len(e.Path)-strings.LastIndex(e.Path, "/")-1 != 255 {
		t.Errorf("no 255-character name")
	}
	if e := seen[wclayertest.DeepPath]; e == nil || strings.Count(e.Path, "/") < 45 {
		t.Errorf("no 45-level path")
	}
	if e := seen["Files/Users/Default User"]; e == nil || binary.LittleEndian.Uint32(e.ReparseData) != 0xA0000003 {
		t.Errorf("no junction")
	}
	for p, e := range seen {
		if e.Type != wclayer.TypeWhiteout && e.Type != wclayer.TypeHardLink && e.SecurityDescriptor == nil {
			t.Errorf("%s: no SD", p)
		}
	}
}

func TestLarge(t *testing.T) {
	var buf bytes.Buffer
	const files, total = 1000, 5 << 20
	if err := wclayertest.Large(&buf, files, total, 3); err != nil {
		t.Fatal(err)
	}
	r, err := wclayer.NewReader(&buf, wclayer.WithBase(true))
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if s := r.Stats(); s.Files != files || s.DataBytes != total {
		t.Errorf("Large: %d files, %d bytes; want %d, %d", s.Files, s.DataBytes, files, total)
	}
}

func TestWriteSampleChain(t *testing.T) {
	dir := t.TempDir()
	paths, err := wclayertest.WriteSampleChain(dir, wclayertest.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 || filepath.Base(paths[2]) != "layer2.tar.zst" {
		t.Fatalf("paths %v", paths)
	}
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, wclayertest.Chain(3)[i].Bytes(wclayertest.Zstd)) {
			t.Errorf("%s differs from Chain(3)[%d]", p, i)
		}
	}
	if _, err := wclayertest.WriteSampleChain(filepath.Join(dir, "missing"), wclayertest.Gzip); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}
