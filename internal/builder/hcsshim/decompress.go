package hcsshim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/wclayer"
)

// Compressions refused by name; gzip and zstd are told apart from plain tar
// by wclayer.DetectCompression.
var (
	magicBzip2 = []byte("BZh")
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// ErrUnsupportedCompression is returned for a recognised but unsupported
// compression (bzip2, xz).
var ErrUnsupportedCompression = errdefs.New(errdefs.ErrInvalidArgument, "unsupported layer compression")

// decompress returns the uncompressed tar stream of a layer blob: gzip, zstd
// or plain, chosen by magic bytes. Close releases the decoder, not r.
func decompress(r io.Reader) (io.ReadCloser, string, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", fmt.Errorf("read layer header: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, magicBzip2):
		return nil, "", fmt.Errorf("bzip2 layer: %w", ErrUnsupportedCompression)
	case bytes.HasPrefix(head, magicXz):
		return nil, "", fmt.Errorf("xz layer: %w", ErrUnsupportedCompression)
	}
	switch wclayer.DetectCompression(head) {
	case wclayer.Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, "", fmt.Errorf("gzip layer: %w", err)
		}
		return zr, "gzip", nil
	case wclayer.Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "", fmt.Errorf("zstd layer: %w", err)
		}
		return zstdCloser{zr}, "zstd", nil
	}
	return io.NopCloser(br), "none", nil
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }
