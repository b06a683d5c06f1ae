package registry

import (
	"bytes"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

type countingBody struct {
	r      io.Reader
	read   int64
	closed bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += int64(n)
	return n, err
}
func (b *countingBody) Close() error { b.closed = true; return nil }

func TestVerifyingReader(t *testing.T) {
	content := bytes.Repeat([]byte("layer-bytes "), 200000) // 2.4 MB
	good, _, _ := v1.SHA256(bytes.NewReader(content))
	bad := v1.Hash{Algorithm: "sha256", Hex: "00" + good.Hex[2:]}
	size := int64(len(content))
	tests := []struct {
		name      string
		want      v1.Hash
		size      int64
		readFirst int64 // bytes the caller reads with ReadFull before Close
		wantRead  error // from the ReadFull
		wantClose error
		wantBody  int64 // bytes taken from the body in total (-1: don't check)
	}{
		{"all read, good", good, size, size, nil, nil, size},
		{"all read, bad digest: error at Size", bad, size, size, ErrDigestMismatch, ErrDigestMismatch, size},
		{"tail unread (tar padding), good", good, size, size - 1000, nil, nil, size},
		{"tail unread, bad digest found by Close", bad, size, size - 1000, nil, ErrDigestMismatch, size},
		{"aborted early: Close does not download the rest", bad, size, 1000, nil, nil, -1},
		{"size too small", good, size - 1, size, ErrDigestMismatch, ErrDigestMismatch, -1},
		{"size unknown, read to EOF", good, 0, size, nil, nil, size},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &countingBody{r: bytes.NewReader(content)}
			c, err := New()
			if err != nil {
				t.Fatal(err)
			}
			v := c.verifying(body, tt.want, tt.size, "test")
			err = readN(v, tt.readFirst)
			if tt.size == 0 && err == nil {
				_, err = v.Read(make([]byte, 1)) // reach EOF
				if errors.Is(err, io.EOF) {
					err = nil
				}
			}
			if !errors.Is(err, tt.wantRead) && (tt.wantRead != nil || err != nil) {
				t.Fatalf("read: %v, want %v", err, tt.wantRead)
			}
			if err := v.Close(); !errors.Is(err, tt.wantClose) && (tt.wantClose != nil || err != nil) {
				t.Fatalf("Close: %v, want %v", err, tt.wantClose)
			}
			if !body.closed {
				t.Fatal("body not closed")
			}
			if tt.wantBody >= 0 && body.read != tt.wantBody {
				t.Fatalf("%d bytes taken from the body, want %d", body.read, tt.wantBody)
			}
			if tt.wantBody < 0 && tt.readFirst == 1000 && body.read > 1<<20 {
				t.Fatalf("Close drained %d bytes after an early abort", body.read)
			}
		})
	}
}

// readN reads k bytes the way a decompressor does (plain Read calls) and
// returns the first error seen, even one delivered with data.
func readN(r io.Reader, k int64) error {
	buf := make([]byte, 64<<10)
	for total := int64(0); total < k; {
		n, err := r.Read(buf[:min(int64(len(buf)), k-total)])
		total += int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}
