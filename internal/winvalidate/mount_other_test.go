//go:build !windows

package winvalidate

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestMountedViewNeedsWindows(t *testing.T) {
	_, err := MountedView(context.Background(), "chain/layer.cim")
	if !errors.Is(err, ErrNeedsWindows) || !strings.Contains(err.Error(), "chain/layer.cim") {
		t.Errorf("err = %v, want ErrNeedsWindows naming the CIM", err)
	}
}
