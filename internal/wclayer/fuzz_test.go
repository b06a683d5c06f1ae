package wclayer_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// FuzzReader feeds arbitrary blobs to the reader: it must never panic or
// hang, every error must be a one-line *Error (a bytes.Reader has no I/O
// errors), and a layer read to io.EOF must have a DiffID.
func FuzzReader(f *testing.F) {
	small := fixture.NewLayer().File("Files/a.txt", []byte("a")).Stream("Files/a.txt", "s", []byte("s")).
		Symlink("Files/l", `..\a.txt`).HardLink("Files/h", "Files/a.txt").Whiteout("Files/gone")
	// Seeds stay small: the fuzzer minimizes every new input, which takes
	// minutes on a 100 KiB tar.
	tiny := fixture.NewLayer().Dir("Hives", fixture.WithSD(nil)).File("Hives/Sam_Delta", []byte("regf"), fixture.WithEA("E", []byte{1}), fixture.WithSD(fixture.SDSystemOnly))
	for _, c := range []fixture.Compression{fixture.Uncompressed, fixture.Gzip, fixture.Zstd} {
		f.Add(small.Bytes(c))
		f.Add(tiny.Bytes(c))
	}
	f.Add(fixture.NewLayer().Raw(&tar.Header{Name: "Files/../x", Typeflag: tar.TypeReg}, nil).Bytes(fixture.Uncompressed))
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	lim := wclayer.WithLimits(wclayer.Limits{MaxFileSize: 1 << 20, MaxTotalSize: 16 << 20, MaxRatio: 100, RatioAfter: 1 << 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := wclayer.NewReader(bytes.NewReader(b), wclayer.WithName("fuzz"), lim,
			wclayer.WithParentLookup(func(p string) bool { return strings.HasSuffix(p, "x") }))
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		defer r.Close()
		for {
			e, err := r.Next()
			if err == io.EOF {
				if _, err := r.DiffID(); err != nil {
					t.Fatalf("DiffID after EOF: %v", err)
				}
				return
			}
			if err != nil {
				checkFuzzErr(t, err)
				return
			}
			if e.Path == "" || e.Type == 0 {
				t.Fatalf("bad entry %+v", e)
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				checkFuzzErr(t, err)
				return
			}
		}
	})
}

func checkFuzzErr(t *testing.T, err error) {
	var le *wclayer.Error
	if !errors.As(err, &le) {
		t.Fatalf("error %v (%T) is not a *wclayer.Error", err, err)
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Fatalf("multi-line error %q", err)
	}
}
