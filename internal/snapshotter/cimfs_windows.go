//go:build windows

package snapshotter

import (
	"github.com/containerd/containerd/v2/core/snapshots"
	cimfs "github.com/containerd/containerd/v2/plugins/snapshots/windows"
)

// NewCimFS returns containerd's own cimfs snapshotter rooted at root: the
// fast path places files into the layout it manages and everything else is
// its code. UNVALIDATED: no Windows host has run this.
func NewCimFS(root string) (snapshots.Snapshotter, error) {
	return cimfs.NewCimFSSnapshotter(root)
}
