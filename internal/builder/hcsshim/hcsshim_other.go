//go:build !windows

package hcsshim

import (
	"fmt"
	"runtime"

	"github.com/cimconv/cimconv/internal/builder"
)

// New returns an error on this OS: the hcsshim builder imports layers with
// Windows' CimFS. Options are still checked so flag mistakes show everywhere.
func New(opts ...Option) (builder.Builder, error) {
	if _, err := newConfig(opts); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("the hcsshim builder needs Windows (CimFS); this host runs %s: %w", runtime.GOOS, builder.ErrUnavailable)
}
