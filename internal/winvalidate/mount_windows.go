//go:build windows

package winvalidate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/Microsoft/go-winio"
	"github.com/Microsoft/go-winio/pkg/guid"
	"github.com/Microsoft/hcsshim/osversion"
	"github.com/Microsoft/hcsshim/pkg/cimfs"
	"golang.org/x/sys/windows"

	"github.com/cimconv/cimconv/internal/builder/hcsshim"
	"github.com/cimconv/cimconv/internal/fsview"
)

// Mounted is a CIM mounted read-only on a CimFS volume.
type Mounted struct {
	// Volume is the volume path, `\\?\Volume{GUID}\`.
	Volume string
}

// ProbeMountCaps reads hcsshim's CimFS capability checks on this host.
func ProbeMountCaps() MountCaps {
	v := osversion.Get()
	rev, _ := osversion.BuildRevision()
	return MountCaps{
		Host:          fmt.Sprintf("%d.%d.%d.%d", v.MajorVersion, v.MinorVersion, v.Build, rev),
		CimFS:         cimfs.IsCimFSSupported(),
		BlockMount:    cimfs.IsBlockCimMountSupported(),
		VerifiedMount: cimfs.IsVerifiedCimMountSupported(),
		BlockWrite:    cimfs.IsBlockCimWriteSupported(),
		VerifiedWrite: cimfs.IsVerifiedCimWriteSupported(),
	}
}

// Mount mounts the CIM at cimPath read-only on a new volume. The path is
// made absolute first. A forked CIM (a .cim file) finds its parents' region
// files in its own directory. A single-file block CIM (any other file) is
// mounted on its own, which is only complete for a base layer: a block CIM
// with parents needs a merged mount, which Mount does not do. A verified
// block CIM is mounted with its root digest (WithRootDigest, or else the
// digest sealed in the CIM when this host can mount verified CIMs), as
// hcsshim does. Where this host cannot mount the kind of CIM, the error wraps
// ErrMountUnsupported.
func Mount(cimPath string, opts ...MountOption) (*Mounted, error) {
	cfg, err := newMountConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", cimPath, err)
	}
	abs, err := AbsCIMPath(cimPath)
	if err != nil {
		return nil, err
	}
	block, err := IsBlockCIM(abs)
	if err != nil {
		return nil, err
	}
	caps := ProbeMountCaps()
	// Refuse what this host cannot mount before any other CimFS call.
	if _, err := planMount(abs, block, cfg.rootDigest != nil, caps); err != nil {
		return nil, err
	}
	if block && cfg.rootDigest == nil && caps.VerifiedMount {
		// A sealed (verified) block CIM records its root digest; an unsealed
		// one makes this fail, and is mounted as a plain block CIM.
		if d, err := cimfs.GetVerificationInfo(abs); err == nil {
			cfg.rootDigest = d
		}
	}
	method, err := planMount(abs, block, cfg.rootDigest != nil, caps)
	if err != nil {
		return nil, err
	}
	id, err := guid.NewV4()
	if err != nil {
		return nil, fmt.Errorf("mount %s: volume GUID: %w", abs, err)
	}
	var vol string
	switch method {
	case mountVerifiedBlock:
		bcim := &cimfs.BlockCIM{Type: cimfs.BlockCIMTypeSingleFile, BlockPath: abs, CimName: hcsshim.BlockCIMName}
		vol, err = cimfs.MountVerifiedBlockCIM(bcim, cimfs.CimMountFlagNone, id, cfg.rootDigest)
	case mountBlock:
		// Mount splits the path again into the block file and the CIM name.
		vol, err = cimfs.Mount(abs+`\`+hcsshim.BlockCIMName, id, cimfs.CimMountSingleFileCim)
	default:
		vol, err = cimfs.Mount(abs, id, cimfs.CimMountFlagNone)
	}
	if err != nil {
		return nil, fmt.Errorf("mount %s (%s CIM): %w", abs, method, err)
	}
	return &Mounted{Volume: vol}, nil
}

// Close unmounts the volume.
func (m *Mounted) Close() error {
	if err := cimfs.Unmount(m.Volume); err != nil {
		return fmt.Errorf("unmount %s: %w", m.Volume, err)
	}
	return nil
}

// MountedView mounts the CIM, walks the volume and unmounts it.
func MountedView(ctx context.Context, cimPath string, opts ...MountOption) (_ []fsview.Entry, retErr error) {
	m, err := Mount(cimPath, opts...)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := m.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	return View(ctx, m.Volume)
}

// View walks the tree at root (a mounted volume or a directory) with backup
// semantics. It enables SeBackupPrivilege when the process holds it
// (elevated administrator), so that every file can be read regardless of
// ACLs. Files are opened with GENERIC_READ only, as hcsshim's layer exporter
// opens them, so the security descriptors read carry owner, group and DACL
// but no SACL — what a layer can carry (see Compare).
func View(ctx context.Context, root string) ([]fsview.Entry, error) {
	v := &winVolume{root: strings.TrimRight(root, `\`) + `\`}
	if err := winio.EnableProcessPrivileges([]string{winio.SeBackupPrivilege}); err == nil {
		v.backup = true
	}
	return walk(ctx, v, isVolumeMetadata)
}

// isVolumeMetadata skips what a volume may show at its root that no layer
// has (unvalidated: a CimFS volume may show none of these).
func isVolumeMetadata(rel string) bool {
	return strings.EqualFold(rel, "System Volume Information") || strings.EqualFold(rel, "$RECYCLE.BIN")
}

type winVolume struct {
	root   string
	backup bool
}

func (v *winVolume) path(rel string) (string, error) {
	c, err := cleanRel(rel)
	if err != nil {
		return "", err
	}
	return v.root + strings.ReplaceAll(c, "/", `\`), nil
}

func (v *winVolume) readDir(_ context.Context, rel string) ([]string, error) {
	p, err := v.path(rel)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

func (v *winVolume) open(_ context.Context, rel string) (fileBasic, func() (*backupStream, error), func() error, error) {
	p, err := v.path(rel)
	if err != nil {
		return fileBasic{}, nil, nil, err
	}
	share := uint32(windows.FILE_SHARE_READ | windows.FILE_SHARE_WRITE | windows.FILE_SHARE_DELETE)
	f, err := winio.OpenForBackup(p, windows.GENERIC_READ, share, windows.OPEN_EXISTING)
	if err != nil {
		if !v.backup {
			err = fmt.Errorf("%w (run elevated so SeBackupPrivilege can bypass ACLs)", err)
		}
		return fileBasic{}, nil, nil, err
	}
	bi, err := winio.GetFileBasicInfo(f)
	if err != nil {
		f.Close()
		return fileBasic{}, nil, nil, err
	}
	si, err := winio.GetFileStandardInfo(f)
	if err != nil {
		f.Close()
		return fileBasic{}, nil, nil, err
	}
	basic := fileBasic{
		attributes:    bi.FileAttributes,
		lastWriteTime: int64(bi.LastWriteTime.HighDateTime)<<32 | int64(bi.LastWriteTime.LowDateTime),
	}
	if !si.Directory {
		basic.endOfFile = si.EndOfFile
	}
	br := winio.NewBackupFileReader(f, true)
	sr := winio.NewBackupStreamReader(br)
	next := func() (*backupStream, error) {
		hdr, err := sr.Next()
		if err != nil {
			return nil, err // io.EOF at the end
		}
		s := &backupStream{kind: kindOf(hdr.Id), name: hdr.Name, r: sr}
		if hdr.Id == winio.BackupSparseBlock {
			// winio strips the block's offset; the walk expects it in front.
			var off [8]byte
			for i := range off {
				off[i] = byte(uint64(hdr.Offset) >> (8 * i))
			}
			s.r = io.MultiReader(strings.NewReader(string(off[:])), sr)
		}
		return s, nil
	}
	closeFn := func() error {
		return errors.Join(br.Close(), f.Close())
	}
	return basic, next, closeFn, nil
}

func kindOf(id uint32) streamKind {
	switch id {
	case winio.BackupData:
		return streamData
	case winio.BackupAlternateData:
		return streamAltData
	case winio.BackupSecurity:
		return streamSecurity
	case winio.BackupEaData:
		return streamEA
	case winio.BackupReparseData:
		return streamReparse
	case winio.BackupSparseBlock:
		return streamSparse
	}
	return streamOther
}
