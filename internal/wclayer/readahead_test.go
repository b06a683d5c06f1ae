package wclayer_test

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// gatedSource serves a layer; after the first open reads, one Read blocks
// inside until released. Close touches what Read touches without a lock, as
// a registry body (verifying reader, byte counter) does: closing while the
// readahead goroutine is still in Read is a data race (-race reports it)
// and is seen by inRead.
type gatedSource struct {
	r       io.Reader
	free    int // reads before the gate
	entered chan struct{}
	release chan struct{}
	inRead  atomic.Bool
	n       int64 // written by Read and Close (deliberately unsynchronized)
}

func (g *gatedSource) Read(p []byte) (int, error) {
	g.inRead.Store(true)
	defer g.inRead.Store(false)
	if g.free == 0 {
		g.free = -1
		close(g.entered)
		<-g.release
	} else if g.free > 0 {
		g.free--
	}
	n, err := g.r.Read(p[:min(len(p), 4096)])
	g.n += int64(n)
	return n, err
}

func (g *gatedSource) Close() error { g.n = -1; return nil }

// Close of a layer reader waits for its readahead goroutine: once it
// returns, the caller may close the source (issue 9 #3: countingReader.Close
// against Read on the readahead goroutine, panic d.nx != 0 in the digest).
func TestReaderCloseWaitsForReadahead(t *testing.T) {
	for _, c := range []fixture.Compression{fixture.Uncompressed, fixture.Gzip} {
		t.Run(c.Ext(), func(t *testing.T) {
			blob := fixture.AppLayer(40).Bytes(c)
			src := &gatedSource{r: bytes.NewReader(blob), free: 1, entered: make(chan struct{}), release: make(chan struct{})}
			r, err := wclayer.NewReader(src)
			if err != nil {
				t.Fatal(err)
			}
			<-src.entered // the readahead goroutine is inside Read
			closed := make(chan bool)
			go func() {
				_ = r.Close()
				closedWhileReading := src.inRead.Load()
				_ = src.Close() // what the builder's deferred rc.Close does next
				closed <- closedWhileReading
			}()
			// Give a Close that does not wait the chance to return early.
			time.Sleep(20 * time.Millisecond)
			close(src.release)
			if <-closed {
				t.Fatal("Close returned while the readahead goroutine was still reading the source")
			}
		})
	}
}

type panickingSource struct {
	r     io.Reader
	reads int
}

func (p *panickingSource) Read(b []byte) (int, error) {
	p.reads++
	if p.reads > 1 {
		panic("verify: d.nx != 0")
	}
	return p.r.Read(b[:min(len(b), 4096)])
}

// A panic in the source on the readahead goroutine is the layer's error,
// not a crash of the process.
func TestReadaheadPanicIsAnError(t *testing.T) {
	blob := fixture.AppLayer(40).Bytes(fixture.Uncompressed)
	r, err := wclayer.NewReader(&panickingSource{r: bytes.NewReader(blob)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for range 10000 {
		if _, err = r.Next(); err != nil {
			break
		}
		if _, err = io.Copy(io.Discard, r); err != nil {
			break
		}
	}
	if err == nil || errors.Is(err, io.EOF) || !bytes.Contains([]byte(err.Error()), []byte("panicked")) {
		t.Fatalf("err = %v, want the source's panic as an error", err)
	}
}

// An uncompressed layer is hashed on a goroutine of its own while it is
// parsed; chunk buffers are reused only when both are done with them. A
// layer of many chunks (more than the readahead holds) must give the DiffID
// of its bytes and every file's data unchanged.
func TestHashingReadaheadSeesEveryChunk(t *testing.T) {
	l := fixture.NewLayer()
	files := map[string][]byte{}
	for i := range 12 {
		name := "Files/big" + string(rune('a'+i)) + ".bin"
		files[name] = fixture.PE(name, 300<<10+i*4099)
		l.File(name, files[name])
	}
	blob := l.Bytes(fixture.Uncompressed)
	res, err := readLayer(blob)
	if err != nil {
		t.Fatal(err)
	}
	if want := "sha256:" + sha(blob); res.diffID != want {
		t.Fatalf("DiffID %s, want %s (the hash of the %d-byte layer)", res.diffID, want, len(blob))
	}
	for name, data := range files {
		if got := res.data[name]; got != sha(data) {
			t.Errorf("%s: data hash %s, want %s", name, got, sha(data))
		}
	}
}
