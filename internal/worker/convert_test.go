package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/wclayer"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		permanent bool
		marked    bool // wrapped by Permanent or Transient
	}{
		{"not windows", fmt.Errorf("resolve: %w", registry.ErrNotWindows), true, true},
		{"foreign layer", registry.ErrForeignLayerRefused, true, true},
		{"digest mismatch", registry.ErrDigestMismatch, true, true},
		{"delta hives", fmt.Errorf("layer x: %w", portable.ErrDeltaHives), true, true},
		{"bad layer entry", &wclayer.Error{Layer: "l", Entry: "Files/../x", Problem: "path traversal"}, true, true},
		{"bad blob", artifact.ErrBlob, true, true},
		{"registry 503", &registry.Error{Op: "get", Transient: true, Err: errors.New("503")}, false, true},
		{"cancelled", context.Canceled, false, false},
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
