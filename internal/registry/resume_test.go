package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cimconv/cimconv/internal/registry/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// cutBlobs aborts the first `times` GETs of blob paths (ending in
// /blobs/<armed digest>) after half the body, as a connection reset would,
// and records the Range headers of later GETs.
func cutBlobs(armed *atomic.Value, times int64, ranges *lockedStrings) func(http.Handler) http.Handler {
	var cuts atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d, _ := armed.Load().(string)
			if r.Method != http.MethodGet || d == "" || !strings.HasSuffix(r.URL.Path, "/blobs/"+d) {
				next.ServeHTTP(w, r)
				return
			}
			if cuts.Add(1) > times {
				ranges.add(r.Header.Get("Range"))
				next.ServeHTTP(w, r)
				return
			}
			rec := &bufferedResponse{header: http.Header{}, code: http.StatusOK}
			next.ServeHTTP(rec, r)
			b := rec.body.Bytes()
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.WriteHeader(rec.code)
			_, _ = w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		})
	}
}

func TestOpenLayerResumesAfterReset(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, r testRegistry) {
		var armed atomic.Value
		var rs lockedStrings
		host := r.start(t, registrytest.WithMiddleware(cutBlobs(&armed, 2, &rs)))
		big := make([]byte, 256<<10)
		_, _ = rand.Read(big)
		ref := host + "/win/big:1"
		registrytest.PushImage(t, ref, [][]byte{big}, v1.Platform{OSVersion: "10.0.20348.1"})
		c, sleeps := newTestClient(t)
		ctx := context.Background()
		targets, err := c.Resolve(ctx, ref, v1.Platform{}, OSVersionPolicy{})
		if err != nil {
			t.Fatal(err)
		}
		l := targets[0].Layers[0]
		armed.Store(l.Digest.String())
		rc, err := c.OpenLayer(ctx, targets[0], l)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("reading through two resets: %v", err)
		}
		if !bytes.Equal(got, big) {
			t.Fatalf("resumed layer differs (%d bytes, want %d)", len(got), len(big))
		}
		// First cut at half; the resume (a Range request) is cut at half of
		// the rest; the second resume completes.
		ranges := rs.all()
		want := []string{"bytes=" + strconv.Itoa(len(big)/2+len(big)/4) + "-" + strconv.Itoa(len(big)-1)}
		if len(ranges) != 1 || ranges[0] != want[0] {
			t.Fatalf("resume requests had Range %q, want %q", ranges, want)
		}
		if len(sleeps.all()) != 2 {
			t.Fatalf("%d backoff sleeps, want 2", len(sleeps.all()))
		}
	})
}

// A server without Range support (200 to a Range request) is resumed by
// re-reading and discarding what was already delivered.
func TestResumeWithoutRangeSupport(t *testing.T) {
	blob := bytes.Repeat([]byte("0123456789"), 10000)
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		if gets.Add(1) == 1 {
			_, _ = w.Write(blob[:len(blob)/3])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		_, _ = w.Write(blob)
	}))
	t.Cleanup(srv.Close)
	d, n, _ := v1.SHA256(bytes.NewReader(blob))
	c, _ := newTestClient(t, WithForeignLayerHosts("127.0.0.1"))
	tg := Target{Ref: mustDigestRef(t, "127.0.0.1:1/x@"+d.String())}
	rc, err := c.OpenLayer(context.Background(), tg, Layer{Digest: d, Size: n, Foreign: true, URLs: []string{srv.URL + "/blob"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, blob) || gets.Load() != 2 {
		t.Fatalf("read %d bytes, err %v, %d GETs", len(got), err, gets.Load())
	}
}

type lockedStrings struct {
	mu sync.Mutex
	s  []string
}

func (l *lockedStrings) add(s string) { l.mu.Lock(); l.s = append(l.s, s); l.mu.Unlock() }

func (l *lockedStrings) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.s...)
}

func TestContentRangeStart(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"bytes 100-199/200", 100, true},
		{"bytes 0-0/1", 0, true},
		{"bytes */200", 0, false},
		{"items 1-2/3", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := contentRangeStart(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("contentRangeStart(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
