package convert_test

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// The worker tags a conversion's logger with the request's image; the
// converter's own lines name the platform manifest it converts "subject", so
// no line carries a key twice.
func TestLogLinesHaveNoDuplicateKeys(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	ref := host + "/win/logged:1"
	desc := registrytest.PushImage(t, ref, layersOf(fixture.Chain(2)), win(ltsc2022))
	core, logs := observer.New(zapcore.DebugLevel)
	f := newFixture(t)
	conv := convert.New(f.reg, portable.New(), f.cache, convert.WithWorkDir(t.TempDir()),
		convert.WithLogger(zap.New(core).With(zap.String("image", ref))))
	if _, err := conv.Convert(context.Background(), convert.Request{Image: ref}); err != nil {
		t.Fatal(err)
	}
	pushed := 0
	for _, e := range logs.AllUntimed() {
		seen := map[string]bool{}
		for _, f := range e.Context {
			if seen[f.Key] {
				t.Errorf("log line %q has the key %q twice: %v", e.Message, f.Key, e.Context)
			}
			seen[f.Key] = true
		}
		if e.Message == "artifact pushed" {
			pushed++
			if got := e.ContextMap()["subject"]; got != host+"/win/logged@"+desc.Digest.String() {
				t.Errorf("artifact pushed: subject = %v, want the platform manifest", got)
			}
		}
	}
	if pushed != 1 {
		t.Fatalf("%d \"artifact pushed\" lines, want 1", pushed)
	}
}
