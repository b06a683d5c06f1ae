package hcsshim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestDecompress(t *testing.T) {
	tarball := layerTar(t, tarFile{"Files/a", "hello"})
	tests := []struct {
		name, kind, want string
		blob             []byte
		errIs            error
	}{
		{name: "gzip", kind: "gzip", want: "gzip"},
		{name: "zstd", kind: "zstd", want: "zstd"},
		{name: "plain", kind: "none", want: "none"},
		{name: "empty", blob: []byte{}, want: "none"},
		{name: "bzip2", blob: []byte("BZh91AY&SY"), errIs: ErrUnsupportedCompression},
		{name: "xz", blob: append(append([]byte{}, magicXz...), 0, 4), errIs: ErrUnsupportedCompression},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob, wantOut := tt.blob, []byte{}
			if blob == nil {
				blob, wantOut = compress(t, tt.kind, tarball), tarball
			}
			rc, kind, err := decompress(bytes.NewReader(blob))
			if tt.errIs != nil {
				if !errors.Is(err, tt.errIs) {
					t.Fatalf("err = %v, want %v", err, tt.errIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.want || !bytes.Equal(got, wantOut) {
				t.Errorf("kind %s, %d bytes; want %s, %d bytes", kind, len(got), tt.want, len(wantOut))
			}
		})
	}
}

func TestDecompressCorruptGzip(t *testing.T) {
	blob := compress(t, "gzip", layerTar(t, tarFile{"Files/a", "hello"}))
	blob = blob[:len(blob)-6] // cut the trailer
	rc, _, err := decompress(bytes.NewReader(blob))
	if err == nil {
		_, err = io.ReadAll(rc)
	}
	if err == nil {
		t.Fatal("truncated gzip decoded without error")
	}
}

func FuzzDecompress(f *testing.F) {
	tarball := layerTar(f, tarFile{"Files/a", "hello"})
	f.Add(compress(f, "gzip", tarball))
	f.Add(compress(f, "zstd", tarball))
	f.Add(tarball)
	f.Add([]byte{0x1f, 0x8b, 0x08})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, _, err := decompress(bytes.NewReader(b))
		if err != nil {
			return
		}
		defer rc.Close()
		io.Copy(io.Discard, io.LimitReader(rc, 1<<20))
	})
}

func cimHeader(major, minor uint32) []byte {
	var h [32]byte
	copy(h[:], "cimfile0")
	binary.LittleEndian.PutUint32(h[16:], major)
	binary.LittleEndian.PutUint32(h[20:], minor)
	return h[:]
}

func TestCimVersion(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
		ok   bool
	}{
		{"v3.0", cimHeader(3, 0), "3.0", true},
		{"v2.1", cimHeader(2, 1), "2.1", true},
		{"short", cimHeader(3, 0)[:20], "", false},
		{"bad magic", append([]byte("cimfile1"), cimHeader(3, 0)[8:]...), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cimVersion(bytes.NewReader(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("cimVersion = %q, %v; want %q, ok=%v", got, err, tt.want, tt.ok)
			}
		})
	}
}

func FuzzCimVersion(f *testing.F) {
	f.Add(cimHeader(3, 0))
	f.Add([]byte("cimfile0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := cimVersion(bytes.NewReader(b))
		if err == nil && (len(b) < 24 || v == "") {
			t.Fatalf("accepted %d bytes as version %q", len(b), v)
		}
	})
}
