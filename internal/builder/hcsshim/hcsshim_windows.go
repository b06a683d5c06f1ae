//go:build windows

package hcsshim

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/Microsoft/go-winio"
	"github.com/Microsoft/hcsshim/osversion"
	"github.com/Microsoft/hcsshim/pkg/cimfs"
	"github.com/Microsoft/hcsshim/pkg/ociwclayer/cim"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
)

// New probes the host (Windows build and revision, CimFS, block CIM support)
// and returns the CimFS builder, or an error wrapping builder.ErrUnavailable
// saying why this host cannot run it.
func New(opts ...Option) (builder.Builder, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	// Earlier hcsshim releases document that the CIM import needs backup and
	// restore privileges, and hcsshim's own tests take them; v0.15.0 no longer
	// says so. Take them when the process holds them (elevated / SYSTEM).
	if err := winio.EnableProcessPrivileges([]string{winio.SeBackupPrivilege, winio.SeRestorePrivilege}); err != nil {
		cfg.log.Warn("could not enable SeBackupPrivilege and SeRestorePrivilege; CIM imports may fail (run elevated or as SYSTEM)", zap.Error(err))
	}
	host := ProbeHost()
	cfg.log.Debug("probed Windows host", zap.String("build", host.String()), zap.Bool("cimfs", host.CimFS),
		zap.Bool("blockCIMWrite", host.BlockCIMWrite), zap.Bool("verifiedCIMWrite", host.VerifiedCIMWrite))
	b, err := newBuilder(cfg, host, cimfsImporter{})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// ProbeHost reads the Windows version (RtlGetVersion), the revision (UBR in
// the registry) and hcsshim's CimFS feature checks.
func ProbeHost() HostInfo {
	v := osversion.Get()
	rev, _ := osversion.BuildRevision() // 0 when unreadable: LTSC2022 then counts as too old
	return HostInfo{
		Major:            uint32(v.MajorVersion),
		Minor:            uint32(v.MinorVersion),
		Build:            uint32(v.Build),
		Revision:         rev,
		CimFS:            cimfs.IsCimFSSupported(),
		BlockCIMWrite:    cimfs.IsBlockCimWriteSupported(),
		VerifiedCIMWrite: cimfs.IsVerifiedCimWriteSupported(),
	}
}

// cimfsImporter calls hcsshim's ociwclayer/cim importers.
type cimfsImporter struct{}

func (cimfsImporter) importForked(ctx context.Context, r io.Reader, layerPath, cimPath string, parentLayerPaths, parentCimPaths []string) error {
	if _, err := cim.ImportCimLayerFromTar(ctx, r, layerPath, cimPath, parentLayerPaths, parentCimPaths); err != nil {
		return err
	}
	return nil
}

func (cimfsImporter) importBlock(ctx context.Context, r io.Reader, blockPath string, parentLayerPaths []string, integrity, vhdFooter bool) (string, error) {
	layer := &cimfs.BlockCIM{Type: cimfs.BlockCIMTypeSingleFile, BlockPath: blockPath, CimName: BlockCIMName}
	// hcsshim v0.15.0's block layer writer uses its parents only for
	// filepath.Dir(BlockPath) (where their base hives are) and their type, so
	// each parent is named by a path inside its side directory.
	parents := make([]*cimfs.BlockCIM, 0, len(parentLayerPaths))
	for _, p := range parentLayerPaths {
		parents = append(parents, &cimfs.BlockCIM{Type: cimfs.BlockCIMTypeSingleFile, BlockPath: filepath.Join(p, "parent.bcim"), CimName: BlockCIMName})
	}
	opts := []cim.BlockCIMLayerImportOpt{cim.WithParentLayers(parents)}
	if integrity {
		opts = append(opts, cim.WithLayerIntegrity())
	}
	if vhdFooter {
		opts = append(opts, cim.WithVHDFooter())
	}
	if _, err := cim.ImportBlockCIMLayerWithOpts(ctx, r, layer, opts...); err != nil {
		return "", err
	}
	if !integrity {
		return "", nil
	}
	digest, err := cim.GetIntegrityChecksum(ctx, blockPath, "")
	if err != nil {
		return "", fmt.Errorf("integrity digest: %w", err)
	}
	return digest, nil
}
