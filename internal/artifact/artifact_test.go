package artifact

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPackUnpackRoundTrip(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{
		"cims/a.cim":             "cim-bytes",
		"cims/region_x_0":        strings.Repeat("r", 10000),
		"side/Hives/SYSTEM_BASE": "regf...",
		"side/layout":            "vhd-with-hives\n",
	})
	cimFiles := []string{"a.cim", "region_x_0"}
	side := []string{"Hives/SYSTEM_BASE", "layout"}
	var b1, b2 bytes.Buffer
	info1, err := Pack(&b1, filepath.Join(src, "cims"), cimFiles, filepath.Join(src, "side"), side)
	if err != nil {
		t.Fatal(err)
	}
	info2, err := Pack(&b2, filepath.Join(src, "cims"), cimFiles, filepath.Join(src, "side"), side)
	if err != nil {
		t.Fatal(err)
	}
	if info1 != info2 || !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Fatalf("pack is not deterministic: %+v vs %+v", info1, info2)
	}
	if info1.Size != int64(b1.Len()) {
		t.Fatalf("size %d, wrote %d", info1.Size, b1.Len())
	}
	dst := t.TempDir()
	want := &LayerConfig{CimFiles: cimFiles, SideFiles: side}
	got, err := Unpack(bytes.NewReader(b1.Bytes()), filepath.Join(dst, "cims"), filepath.Join(dst, "side"), want)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.CimFiles) != 2 || len(got.SideFiles) != 2 {
		t.Fatalf("unpacked %+v", got)
	}
	b, err := os.ReadFile(filepath.Join(dst, "side", "Hives", "SYSTEM_BASE"))
	if err != nil || string(b) != "regf..." {
		t.Fatalf("side file: %q %v", b, err)
	}
	// A config that promises other files is refused.
	_, err = Unpack(bytes.NewReader(b1.Bytes()), t.TempDir(), t.TempDir(), &LayerConfig{CimFiles: []string{"a.cim"}, SideFiles: side})
	if !errors.Is(err, ErrBlob) {
		t.Fatalf("mismatched config: err = %v, want ErrBlob", err)
	}
}

func rawBlob(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(bytes.Repeat([]byte{'x'}, int(h.Size)))
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestUnpackRefusesUnsafeBlobs(t *testing.T) {
	tests := []struct {
		name string
		blob []byte
	}{
		{"traversal in side", rawBlob(t, &tar.Header{Name: "side/../../etc/passwd", Typeflag: tar.TypeReg, Size: 1})},
		{"directory in cim name", rawBlob(t, &tar.Header{Name: "cim/sub/a.cim", Typeflag: tar.TypeReg, Size: 1})},
		{"symlink", rawBlob(t, &tar.Header{Name: "cim/a.cim", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})},
		{"unknown prefix", rawBlob(t, &tar.Header{Name: "other/a", Typeflag: tar.TypeReg, Size: 1})},
		{"duplicate", rawBlob(t, &tar.Header{Name: "cim/a.cim", Typeflag: tar.TypeReg, Size: 1}, &tar.Header{Name: "cim/a.cim", Typeflag: tar.TypeReg, Size: 1})},
		{"not zstd", []byte("plain text")},
		{"backslash", rawBlob(t, &tar.Header{Name: `side/Hives\..\x`, Typeflag: tar.TypeReg, Size: 1})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Unpack(bytes.NewReader(tt.blob), filepath.Join(dir, "c"), filepath.Join(dir, "s"), nil)
			if !errors.Is(err, ErrBlob) {
				t.Fatalf("err = %v, want ErrBlob", err)
			}
		})
	}
}

func TestChoose(t *testing.T) {
	c := func(d, build, created string) Candidate {
		return Candidate{Digest: d, Annotations: map[string]string{
			AnnotationFormatVersion: "1", AnnotationWindowsBuild: build, AnnotationCreated: created,
		}}
	}
	tests := []struct {
		name  string
		cands []Candidate
		node  string
		want  string
	}{
		{"newest wins", []Candidate{c("a", "", "2026-01-01T00:00:00Z"), c("b", "", "2026-02-01T00:00:00Z")}, "", "b"},
		{"first is not taken blindly", []Candidate{c("new-too-new", "10.0.26100.1", "2026-03-01T00:00:00Z"), c("old-ok", "10.0.20348.2031", "2026-01-01T00:00:00Z")}, "10.0.20348.2340", "old-ok"},
		{"none compatible", []Candidate{c("x", "10.0.26100.1", "2026-03-01T00:00:00Z")}, "20348", ""},
		{"host-independent always fits", []Candidate{c("p", "", "2026-01-01T00:00:00Z")}, "17763", "p"},
		{"foreign artifacts ignored", []Candidate{{Digest: "z", Annotations: map[string]string{AnnotationCreated: "2030-01-01T00:00:00Z"}}, c("ok", "", "2026-01-01T00:00:00Z")}, "", "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Choose(tt.cands, tt.node)
			if tt.want == "" {
				if ok {
					t.Fatalf("chose %s, want none", got.Digest)
				}
				return
			}
			if !ok || got.Digest != tt.want {
				t.Fatalf("chose %q (%v), want %q", got.Digest, ok, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := func() *Config {
		return &Config{FormatVersion: "1", Layers: []LayerConfig{{
			Cim: "a.cim", CimFiles: []string{"a.cim", "region_a_0"}, SideFiles: []string{"Hives/SYSTEM_BASE"},
			ChainID: "sha256:" + strings.Repeat("0", 64),
		}}}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"good", func(*Config) {}, true},
		{"no layers", func(c *Config) { c.Layers = nil }, false},
		{"cim with dir", func(c *Config) { c.Layers[0].Cim = "../a.cim" }, false},
		{"cim file with slash", func(c *Config) { c.Layers[0].CimFiles = []string{"x/y"} }, false},
		{"side traversal", func(c *Config) { c.Layers[0].SideFiles = []string{"../../x"} }, false},
		{"bad chainID", func(c *Config) { c.Layers[0].ChainID = "sha256:zz" }, false},
		// Right prefix and length, but a path: fetch would write outside DEST.
		{"chainID traversal", func(c *Config) { c.Layers[0].ChainID = "sha256:../../../escaped-" + strings.Repeat("x", 47) }, false},
		{"chainID uppercase hex", func(c *Config) { c.Layers[0].ChainID = "sha256:" + strings.Repeat("A", 64) }, false},
		{"chainID other algorithm", func(c *Config) { c.Layers[0].ChainID = "sha512:" + strings.Repeat("0", 64) }, false},
		{"diffID", func(c *Config) { c.Layers[0].DiffID = "sha256:" + strings.Repeat("1", 64) }, true},
		{"diffID traversal", func(c *Config) { c.Layers[0].DiffID = "sha256:../../../escaped-" + strings.Repeat("x", 47) }, false},
		{"no format", func(c *Config) { c.FormatVersion = "" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			tt.mutate(c)
			err := c.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
