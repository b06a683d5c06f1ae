package snapshotter

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
)

// The mount shape of containerd's cimfs snapshotter (core/mount's
// CimFSMountType, LayerCimPathFlag, ParentLayerPathsFlag and
// ParentLayerCimPathsFlag, which containerd defines for Windows only).
const (
	CimFSMountType          = "CimFS"
	LayerCimPathFlag        = "cimpath="
	ParentLayerPathsFlag    = "parentLayerPaths="
	ParentLayerCimPathsFlag = "parentCimPaths="
)

// The on-disk layout of containerd's cimfs snapshotter under its root:
// ROOT/metadata.db, ROOT/snapshots/<id>/ (a layer's directory: side files of
// an imported layer, sandbox.vhdx of a container's scratch) and
// ROOT/snapshots/cim-layers/<id>.cim with every layer's region_* and
// objectid_* files beside it.
const (
	snapshotsDirName = "snapshots"
	cimDirName       = "cim-layers"
)

// SnapshotDir is the directory of snapshot id under a cimfs snapshotter root.
func SnapshotDir(root, id string) string { return filepath.Join(root, snapshotsDirName, id) }

// CimDir is the directory holding every layer's CIM files.
func CimDir(root string) string { return filepath.Join(root, snapshotsDirName, cimDirName) }

// CimPath is the .cim of snapshot id.
func CimPath(root, id string) string { return filepath.Join(CimDir(root), id+".cim") }

// CimFSMount is a parsed CimFS mount.
type CimFSMount struct {
	// Source is the snapshot's directory (side files go here).
	Source string
	// CimPath is where the layer's .cim goes when the snapshot is an
	// extraction snapshot; its region files go beside it.
	CimPath string
	// ParentPaths and ParentCimPaths list the parents, nearest first.
	ParentPaths    []string
	ParentCimPaths []string
	ReadOnly       bool
}

// cimfsMounts builds the mounts containerd's cimfs snapshotter returns for a
// snapshot: one mount of type CimFS, source the snapshot's directory, options
// ro|rw, cimpath=, and for a snapshot with parents parentLayerPaths= and
// parentCimPaths= (JSON lists, nearest parent first).
func cimfsMounts(root, id string, parentIDs []string, readOnly bool) []mount.Mount {
	flag := "rw"
	if readOnly {
		flag = "ro"
	}
	opts := []string{flag, LayerCimPathFlag + CimPath(root, id)}
	if len(parentIDs) > 0 {
		var dirs, cims []string
		for _, p := range parentIDs {
			dirs = append(dirs, SnapshotDir(root, p))
			cims = append(cims, CimPath(root, p))
		}
		d, _ := json.Marshal(dirs)
		c, _ := json.Marshal(cims)
		opts = append(opts, ParentLayerPathsFlag+string(d), ParentLayerCimPathsFlag+string(c))
	}
	return []mount.Mount{{Type: CimFSMountType, Source: SnapshotDir(root, id), Options: opts}}
}

// ParseCimFSMount reads the mounts a cimfs snapshotter returned.
func ParseCimFSMount(ms []mount.Mount) (CimFSMount, error) {
	if len(ms) != 1 {
		return CimFSMount{}, fmt.Errorf("cimfs mounts: %d mounts, want 1", len(ms))
	}
	m := ms[0]
	if m.Type != CimFSMountType {
		return CimFSMount{}, fmt.Errorf("cimfs mounts: type %q, want %q", m.Type, CimFSMountType)
	}
	out := CimFSMount{Source: m.Source}
	for _, o := range m.Options {
		switch {
		case o == "ro":
			out.ReadOnly = true
		case strings.HasPrefix(o, LayerCimPathFlag):
			out.CimPath = strings.TrimPrefix(o, LayerCimPathFlag)
		case strings.HasPrefix(o, ParentLayerPathsFlag):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(o, ParentLayerPathsFlag)), &out.ParentPaths); err != nil {
				return CimFSMount{}, fmt.Errorf("cimfs mounts: %s: %w", ParentLayerPathsFlag, err)
			}
		case strings.HasPrefix(o, ParentLayerCimPathsFlag):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(o, ParentLayerCimPathsFlag)), &out.ParentCimPaths); err != nil {
				return CimFSMount{}, fmt.Errorf("cimfs mounts: %s: %w", ParentLayerCimPathsFlag, err)
			}
		}
	}
	if out.CimPath == "" || out.Source == "" {
		return CimFSMount{}, fmt.Errorf("cimfs mounts: no %s or no source", LayerCimPathFlag)
	}
	if len(out.ParentPaths) != len(out.ParentCimPaths) {
		return CimFSMount{}, fmt.Errorf("cimfs mounts: %d parent paths, %d parent CIM paths", len(out.ParentPaths), len(out.ParentCimPaths))
	}
	return out, nil
}
