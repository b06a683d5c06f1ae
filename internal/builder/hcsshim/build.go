package hcsshim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/keymutex"
)

// Name is the builder name recorded in artifacts.
const Name = builder.NameHcsshim

// BlockCIMName is the name of the CIM inside each single-file block CIM this
// builder writes; parents are referenced by their block file and this name.
const BlockCIMName = "layer.cim"

// importer is the CimFS side of a build: hcsshim's ociwclayer/cim on Windows,
// a fake in the Linux tests. Parent slices are ordered from the immediate
// parent down to the base layer, as hcsshim expects.
type importer interface {
	// importForked writes cimPath (with region/objectid files beside it)
	// forked from parentCimPaths[0], and hcsshim's side files into layerPath.
	importForked(ctx context.Context, r io.Reader, layerPath, cimPath string, parentLayerPaths, parentCimPaths []string) error
	// importBlock writes a single-file block CIM at blockPath holding one
	// CIM named BlockCIMName; its side files go to filepath.Dir(blockPath),
	// and the parents' base hives are read from parentLayerPaths. It
	// returns the hex root digest when integrity is set.
	importBlock(ctx context.Context, r io.Reader, blockPath string, parentLayerPaths []string, integrity, vhdFooter bool) (string, error)
}

// hcsBuilder implements builder.Builder with CimFS.
type hcsBuilder struct {
	cfg     config
	host    HostInfo
	formats []string
	imp     importer

	// dirLocks serialises builds per CIM directory: the files a forked import
	// created are found by diffing the directory listing, which is only
	// exact when nothing else writes there meanwhile. A lock lives while a
	// build holds or waits for it.
	dirLocks keymutex.Mutex
}

func newBuilder(cfg config, host HostInfo, imp importer) (*hcsBuilder, error) {
	formats, err := checkHost(host, cfg)
	if err != nil {
		return nil, err
	}
	return &hcsBuilder{cfg: cfg, host: host, formats: formats, imp: imp}, nil
}

// Capabilities implements builder.Builder.
func (b *hcsBuilder) Capabilities() builder.Capabilities {
	return builder.Capabilities{
		Name:         Name,
		Formats:      append([]string(nil), b.formats...),
		Format:       b.cfg.format,
		WindowsBuild: b.host.String(),
		HiveMerge:    true,
		Integrity:    b.cfg.integrity,
		VHDFooter:    b.cfg.vhdFooter,
	}
}

// BuildLayer implements builder.Builder. The layer is streamed once:
// registry/file reader -> decompression -> diffID hash -> hcsshim's tar
// importer. On any error everything this call created is removed.
func (b *hcsBuilder) BuildLayer(ctx context.Context, layer builder.LayerSource, parent *builder.BuiltLayer, dir string) (_ *builder.BuiltLayer, retErr error) {
	if layer.Open == nil {
		return nil, fmt.Errorf("layer %s: no Open function", layer.Digest)
	}
	layerHex, err := digestHex("layer digest", layer.Digest)
	if err != nil {
		return nil, err
	}
	_, err = digestHex("layer chainID", layer.ChainID)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("layer %s: empty CIM directory", layer.Digest)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("CIM directory: %w", err)
	}
	parentLayerPaths, parentCims, err := b.parentChain(parent, dir)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	suffix, err := uniqueSuffix()
	if err != nil {
		return nil, err
	}
	sideRoot := dir
	if b.cfg.workDir != "" {
		sideRoot = b.cfg.workDir
	}
	// One side directory per chainID (builder.SideDir): hcsshim writes hives
	// there with create-new semantics, so it must start empty.
	sideDir := builder.SideDir(sideRoot, layer.ChainID)
	if err := os.MkdirAll(filepath.Dir(sideDir), 0o755); err != nil {
		return nil, fmt.Errorf("layer %s: side directory: %w", layer.Digest, err)
	}
	if err := os.Mkdir(sideDir, 0o755); errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("layer %s: side directory %s already exists: chainID %s was already built in this directory", layer.Digest, sideDir, layer.ChainID)
	} else if err != nil {
		return nil, fmt.Errorf("layer %s: side directory: %w", layer.Digest, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		os.RemoveAll(sideDir)
		return nil, fmt.Errorf("layer %s: CIM directory: %w", layer.Digest, err)
	}

	unlock := b.dirLocks.Lock(dir)
	defer unlock()

	before, err := listNames(dir)
	if err != nil {
		os.RemoveAll(sideDir)
		return nil, err
	}
	cimName := layerHex + "-" + suffix + ".cim"
	blockName := layerHex + "-" + suffix + ".bcim"
	defer func() {
		if retErr == nil {
			return
		}
		// Never leave a half-written CIM: remove what this import created.
		if after, err := listNames(dir); err == nil {
			for _, n := range createdCimFiles(before, after, cimName, blockName) {
				if err := os.Remove(filepath.Join(dir, n)); err != nil {
					b.cfg.log.Warn("remove partial CIM file", zap.String("file", n), zap.Error(err))
				}
			}
		}
		if err := os.RemoveAll(sideDir); err != nil {
			b.cfg.log.Warn("remove partial side directory", zap.String("dir", sideDir), zap.Error(err))
		}
	}()

	log := b.cfg.log.With(zap.String("digest", layer.Digest), zap.String("chainID", layer.ChainID), zap.String("format", b.cfg.format))
	rc, err := layer.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open layer %s: %w", layer.Digest, err)
	}
	defer rc.Close()
	tr, compression, err := decompress(builder.ContextReader(ctx, rc))
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	defer tr.Close()
	h := sha256.New()
	stream := io.TeeReader(builder.ContextReader(ctx, tr), h)
	log.Debug("importing layer", zap.String("compression", compression), zap.String("sideDir", sideDir))

	out := &builder.BuiltLayer{
		ChainID:      layer.ChainID,
		DiffID:       layer.DiffID,
		SourceDigest: layer.Digest,
		SideDir:      sideDir,
		Format:       b.cfg.format,
		Builder:      Name,
		WindowsBuild: b.host.String(),
		Parent:       parent,
	}
	switch b.cfg.format {
	case builder.FormatBlock:
		// hcsshim keeps a block layer's hives in the block file's directory,
		// so the block CIM is written in the side directory, then moved
		// beside the chain's other CIM files.
		tmpPath := filepath.Join(sideDir, blockName)
		digest, err := b.imp.importBlock(ctx, stream, tmpPath, parentLayerPaths, b.cfg.integrity, b.cfg.vhdFooter)
		if err != nil {
			return nil, fmt.Errorf("import layer %s as block CIM: %w", layer.Digest, err)
		}
		if err := os.Rename(tmpPath, filepath.Join(dir, blockName)); err != nil {
			return nil, fmt.Errorf("layer %s: move block CIM: %w", layer.Digest, err)
		}
		out.CimDir, out.CimName, out.CimFiles = dir, blockName, []string{blockName}
		out.IntegrityDigest = digest
	default:
		cimPath := filepath.Join(dir, cimName)
		if err := b.imp.importForked(ctx, stream, sideDir, cimPath, parentLayerPaths, parentCims); err != nil {
			return nil, fmt.Errorf("import layer %s as forked CIM: %w", layer.Digest, err)
		}
		after, err := listNames(dir)
		if err != nil {
			return nil, err
		}
		out.CimDir, out.CimName = dir, cimName
		out.CimFiles = createdCimFiles(before, after, cimName, "")
		if !after[cimName] {
			return nil, fmt.Errorf("import layer %s: CimFS reported success but wrote no %s", layer.Digest, cimName)
		}
		if out.CimVersion, err = readCimVersion(cimPath); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
		}
	}
	if err := verifyDiffID(stream, h, layer.DiffID); err != nil {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if parent != nil {
		carried, err := carryForwardHives(parent.SideDir, sideDir)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", layer.Digest, err)
		}
		if len(carried) > 0 {
			log.Debug("carried base hives forward from parent", zap.Strings("hives", carried))
		}
	}
	if out.SideFiles, err = sideFiles(sideDir); err != nil {
		return nil, err
	}
	log.Info("built layer CIM", zap.String("cim", out.CimName), zap.Int("cimFiles", len(out.CimFiles)), zap.Strings("sideFiles", out.SideFiles))
	return out, nil
}

// parentChain returns the parents' side directories and CIM paths, immediate
// parent first, checking that the chain fits this build and that every
// ancestor's CIM files are in dir (checkAncestorFiles).
func (b *hcsBuilder) parentChain(parent *builder.BuiltLayer, dir string) (layerPaths, cimPaths []string, err error) {
	depth := 0
	for p := parent; p != nil; p = p.Parent {
		depth++
		if p.Format != b.cfg.format {
			return nil, nil, fmt.Errorf("parent %s is a %s CIM; cannot build a %s CIM on it", p.ChainID, p.Format, b.cfg.format)
		}
		if p.Builder != Name {
			return nil, nil, fmt.Errorf("parent %s was built by %q; a CimFS-built child needs CimFS-built parents", p.ChainID, p.Builder)
		}
		if p.SideDir == "" || p.CimName == "" {
			return nil, nil, fmt.Errorf("parent %s has no side directory or CIM name", p.ChainID)
		}
		if p == parent {
			pd, err := filepath.Abs(p.CimDir)
			if err != nil || pd != dir {
				return nil, nil, fmt.Errorf("parent %s CIM is in %s, not in %s: a CIM must be built beside its parent's", p.ChainID, p.CimDir, dir)
			}
		}
		if err := checkAncestorFiles(p, depth, dir); err != nil {
			return nil, nil, err
		}
		layerPaths = append(layerPaths, p.SideDir)
		cimPaths = append(cimPaths, filepath.Join(p.CimDir, p.CimName))
	}
	return layerPaths, cimPaths, nil
}

// verifyDiffID drains what the importer left (tar padding) so the whole
// uncompressed stream is hashed, then compares with the config's diffID.
func verifyDiffID(rest io.Reader, h hash.Hash, diffID string) error {
	if _, err := io.Copy(io.Discard, rest); err != nil {
		return fmt.Errorf("read layer to the end: %w", err)
	}
	if diffID == "" {
		return nil
	}
	want, err := digestHex("diffID", diffID)
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%w: uncompressed layer is sha256:%s, image config says %s", ErrDiffIDMismatch, got, diffID)
	}
	return nil
}

// ErrDiffIDMismatch: the uncompressed layer does not match the image config.
var ErrDiffIDMismatch = errdefs.New(errdefs.ErrPermanent, "diffID mismatch")

func readCimVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	v, err := cimVersion(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return v, nil
}
