package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/hive"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		permanent bool
		marked    bool // wrapped by Permanent or Transient
	}{
		{"not windows", fmt.Errorf("resolve: %w", registry.ErrNotWindows), true, true},
		{"no match", registry.ErrNoMatch, true, true},
		{"not found", fmt.Errorf("fetch: %w", registry.ErrNotFound), true, true},
		{"foreign layer", registry.ErrForeignLayerRefused, true, true},
		{"digest mismatch", registry.ErrDigestMismatch, true, true},
		{"delta hives", fmt.Errorf("layer x: %w", portable.ErrDeltaHives), true, true},
		{"unmerged", convert.ErrUnmerged, true, true},
		{"bad layer entry", &wclayer.Error{Layer: "l", Entry: "Files/../x", Problem: "path traversal", Err: wclayer.ErrPathTraversal}, true, true},
		{"bad blob", artifact.ErrBlob, true, true},
		{"corrupt hive", fmt.Errorf("layer 2/3: merge SYSTEM: %w", &hive.FormatError{Offset: 0x1020, Msg: "bad cell"}), true, true},
		{"dirty hive", hive.ErrDirty, true, true},
		{"unmergeable hives", fmt.Errorf("%w: duplicate key", hive.ErrMerge), true, true},
		{"registry 503", &registry.Error{Op: "get", Transient: true, Err: errors.New("503")}, false, true},
		{"transient cause inside a bad layer", &wclayer.Error{Layer: "l", Problem: "read", Err: fmt.Errorf("%w: %w", wclayer.ErrCorrupt, &registry.Error{Op: "read", Transient: true, Err: io.ErrUnexpectedEOF})}, false, true},
		{"cancelled", context.Canceled, false, false},
		{"cancelled inside a permanent kind", fmt.Errorf("%w: %w", registry.ErrNotFound, context.Canceled), false, false},
		{"unknown", errors.New("disk full"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify(tt.err)
			if IsPermanent(got) != tt.permanent {
				t.Errorf("IsPermanent = %v, want %v", IsPermanent(got), tt.permanent)
			}
			if (got != tt.err) != tt.marked {
				t.Errorf("marked = %v, want %v", got != tt.err, tt.marked)
			}
			if !errors.Is(got, tt.err) && got != tt.err {
				t.Errorf("classification lost the cause: %v", got)
			}
		})
	}
}

// TestClassifyRealFailures: failures produced by the real components, not
// built by hand, classify as issue 9 item 6 wants: nothing changes on retry
// for a diffID mismatch or a truncated blob, so they are permanent.
func TestClassifyRealFailures(t *testing.T) {
	base := fixture.BaseLayer().Bytes(fixture.Gzip)

	t.Run("diffID mismatch", func(t *testing.T) {
		src := builder.LayerSource{
			Digest: "sha256:layer", DiffID: "sha256:" + strings.Repeat("0", 64), ChainID: "sha256:" + strings.Repeat("0", 64),
			Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(base)), nil },
		}
		_, err := portable.New().BuildLayer(context.Background(), src, nil, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "diffID mismatch") {
			t.Fatalf("err = %v, want a diffID mismatch", err)
		}
		if got := Classify(err); !IsPermanent(got) {
			t.Errorf("diffID mismatch %v is not permanent", err)
		}
	})

	// A layer stored truncated (its digest and diffID are those of the
	// truncated bytes, so every check passes until the tar ends early).
	t.Run("truncated layer", func(t *testing.T) {
		plain := fixture.BaseLayer().Bytes(fixture.Uncompressed)
		host := registrytest.NewReferrersRegistry(t)
		registrytest.PushImage(t, host+"/win/cut:1", [][]byte{plain[:len(plain)/2]}, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"})
		err := convertOnce(t, host+"/win/cut:1")
		if got := Classify(err); !IsPermanent(got) {
			t.Errorf("truncated layer: %v is not permanent", err)
		}
	})

	t.Run("truncated blob", func(t *testing.T) {
		// The registry serves every layer blob cut in half, as a complete
		// response (Content-Length matches what is sent): a blob stored
		// truncated. Every retry gets the same bytes.
		truncate := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
					next.ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				if rec.Code != http.StatusOK || len(body) < 64<<10 { // the config blob is small
					for k, v := range rec.Header() {
						w.Header()[k] = v
					}
					w.WriteHeader(rec.Code)
					w.Write(body)
					return
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)/2))
				w.WriteHeader(http.StatusOK)
				w.Write(body[:len(body)/2])
			})
		}
		host := registrytest.NewReferrersRegistry(t, registrytest.WithMiddleware(truncate))
		registrytest.PushImage(t, host+"/win/truncated:1", [][]byte{base}, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"})
		err := convertOnce(t, host+"/win/truncated:1")
		if got := Classify(err); !IsPermanent(got) {
			t.Errorf("truncated blob: %v is not permanent", err)
		}
	})
}

// convertOnce converts image with the portable builder and returns the
// error, failing the test when there is none.
func convertOnce(t *testing.T, image string) error {
	t.Helper()
	reg, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	cache, err := convert.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conv := convert.New(reg, portable.New(), cache, convert.WithWorkDir(t.TempDir()))
	_, err = conv.Convert(context.Background(), convert.Request{Image: image})
	if err == nil {
		t.Fatalf("converted %s", image)
	}
	return err
}
