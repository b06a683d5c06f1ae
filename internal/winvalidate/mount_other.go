//go:build !windows

package winvalidate

import (
	"context"
	"fmt"
	"runtime"

	"github.com/cimconv/cimconv/internal/fsview"
)

// MountedView needs CimFS: on this OS it returns ErrNeedsWindows.
func MountedView(ctx context.Context, cimPath string, opts ...MountOption) ([]fsview.Entry, error) {
	return nil, fmt.Errorf("%s: %w; this host runs %s", cimPath, ErrNeedsWindows, runtime.GOOS)
}
