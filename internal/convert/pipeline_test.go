package convert_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/fetch/fetchtest"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// packFailBuilder builds base layers with the portable builder, listing a
// CIM file that does not exist when breakPack is set, so packing them fails;
// every other layer's build calls blocked and lasts until it is cancelled.
// It is not TwoPhase: layers are built one by one, each packed behind the
// next one's build.
type packFailBuilder struct {
	inner     *portable.Builder
	breakPack bool
	blocked   func()
}

func (b packFailBuilder) Capabilities() builder.Capabilities { return b.inner.Capabilities() }

func (b packFailBuilder) BuildLayer(ctx context.Context, l builder.LayerSource, parent *builder.BuiltLayer, dir string) (*builder.BuiltLayer, error) {
	if parent != nil {
		if b.blocked != nil {
			b.blocked()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("layer %s: %w", l.Digest, ctx.Err())
		case <-time.After(time.Minute):
			return nil, errors.New("the build was never cancelled")
		}
	}
	bl, err := b.inner.BuildLayer(ctx, l, parent, dir)
	if err != nil {
		return nil, err
	}
	if b.breakPack {
		bl.CimFiles = append(bl.CimFiles, "missing-region-file")
	}
	return bl, nil
}

// TestPackFailureIsTheError: when packing a layer fails, the build of the
// next layer is cancelled; the conversion reports the pack failure, not the
// cancellation it caused (which the worker would retry to MaxDeliver).
func TestPackFailureIsTheError(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	registrytest.PushImage(t, host+"/win/packfail:1", [][]byte{
		fixture.BaseLayer().Bytes(fixture.Gzip), fixture.AppLayer(1).Bytes(fixture.Gzip),
	}, win(ltsc2022))
	cache, err := convert.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conv := convert.New(fetchtest.NewRegistry(t), packFailBuilder{inner: portable.New(), breakPack: true}, cache, convert.WithWorkDir(t.TempDir()))
	_, err = conv.Convert(context.Background(), convert.Request{Image: host + "/win/packfail:1"})
	if err == nil {
		t.Fatal("conversion succeeded with an unpackable layer")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v: the pack failure was reported as a cancellation", err)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing-region-file") || !strings.Contains(err.Error(), "pack") {
		t.Fatalf("err = %v, want the pack failure naming the missing file", err)
	}
}

// TestCallersCauseIsKept: a conversion stopped by its caller returns the
// caller's cause, not a bare context.Canceled.
func TestCallersCauseIsKept(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	registrytest.PushImage(t, host+"/win/stopped:1", [][]byte{
		fixture.BaseLayer().Bytes(fixture.Gzip), fixture.AppLayer(1).Bytes(fixture.Gzip),
	}, win(ltsc2022))
	cache, err := convert.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	errShutdown := errors.New("worker shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	b := packFailBuilder{inner: portable.New(), blocked: func() { cancel(errShutdown) }}
	conv := convert.New(fetchtest.NewRegistry(t), b, cache, convert.WithWorkDir(t.TempDir()))
	_, err = conv.Convert(ctx, convert.Request{Image: host + "/win/stopped:1"})
	if !errors.Is(err, errShutdown) {
		t.Fatalf("err = %v, want the caller's cause %v", err, errShutdown)
	}
}
