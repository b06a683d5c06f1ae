//go:build !windows

package hcsshim

import (
	"errors"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/builder"
)

func TestNewNeedsWindows(t *testing.T) {
	b, err := New()
	if err == nil || b != nil {
		t.Fatalf("New() = %v, %v; want an error off Windows", b, err)
	}
	if !errors.Is(err, builder.ErrUnavailable) || !strings.Contains(err.Error(), "needs Windows (CimFS)") {
		t.Errorf("err = %v", err)
	}
	if _, err := New(WithFormat("nope")); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("bad option not reported: %v", err)
	}
}
