package wclayer_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// readLayer reads a whole layer and returns its entries and the sha256 of
// each file's/stream's data (keyed by TarName).
type readResult struct {
	entries []*wclayer.Entry
	data    map[string]string
	diffID  string
	stats   wclayer.Stats
}

func readLayer(b []byte, opts ...wclayer.Option) (*readResult, error) {
	r, err := wclayer.NewReader(bytes.NewReader(b), opts...)
	if err != nil {
		return nil, err
	}
	res := &readResult{data: map[string]string{}}
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, err
		}
		res.entries = append(res.entries, e)
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return res, err
		}
		res.data[e.TarName] = hex.EncodeToString(h.Sum(nil))
	}
	res.diffID, err = r.DiffID()
	res.stats = r.Stats()
	return res, err
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// rawTar writes headers with archive/tar, then lets patch edit the bytes
// (fixing up each 512-byte header's checksum afterwards).
func rawTar(t testing.TB, l *fixture.Layer, patch func([]byte)) []byte {
	t.Helper()
	b := l.Bytes(fixture.Uncompressed)
	if patch != nil {
		patch(b)
		fixChecksums(b)
	}
	return b
}

// fixChecksums recomputes the checksum of every ustar header block.
func fixChecksums(b []byte) {
	for off := 0; off+512 <= len(b); off += 512 {
		blk := b[off : off+512]
		if !bytes.Equal(blk[257:262], []byte("ustar")) {
			continue
		}
		copy(blk[148:156], "        ")
		var sum int
		for _, c := range blk {
			sum += int(c)
		}
		copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
	}
}

// replaceOnce replaces the first occurrence of old in b (same length).
func replaceOnce(t testing.TB, b []byte, old, new string) {
	t.Helper()
	if len(old) != len(new) {
		t.Fatalf("replaceOnce: %q and %q differ in length", old, new)
	}
	i := bytes.Index(b, []byte(old))
	if i < 0 {
		t.Fatalf("replaceOnce: %q not found", old)
	}
	copy(b[i:], new)
}

func hdr(name string, typ byte, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: typ, Size: size, Mode: 0o100000, Format: tar.FormatPAX}
}

func asLayerError(t testing.TB, err error) *wclayer.Error {
	t.Helper()
	var le *wclayer.Error
	if !errors.As(err, &le) {
		t.Fatalf("error %v (%T) is not a *wclayer.Error", err, err)
	}
	return le
}
