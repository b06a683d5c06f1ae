package portable

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/wclayer"
)

// Name is the builder's name in flags, logs and artifact annotations.
const Name = "portable"

// CimVersion is the CIM format version this builder writes.
const CimVersion = "3.0"

// ErrDeltaHives is returned for a non-base layer that carries delta registry
// hives: merging them with the parent's base hives needs offreg's
// ORMergeHives, which only exists on Windows.
var ErrDeltaHives = errors.New("merging delta registry hives needs the Windows builder (offreg ORMergeHives); build this image with --builder hcsshim on a Windows worker")

// hive names a registry hive of a Windows layer: its file under
// Files/Windows/System32/config, and its base and delta names under Hives/.
type hive struct{ name, base, delta string }

// hives is the fixed set of registry hives a Windows layer carries.
var hives = []hive{
	{"SYSTEM", "SYSTEM_BASE", "SYSTEM_Delta"},
	{"SOFTWARE", "SOFTWARE_BASE", "SOFTWARE_Delta"},
	{"SAM", "SAM_BASE", "SAM_Delta"},
	{"SECURITY", "SECURITY_BASE", "SECURITY_Delta"},
	{"DEFAULT", "DEFAULTUSER_BASE", "DEFAULTUSER_Delta"},
}

const (
	configDir    = "Files/Windows/System32/config"
	hivesDir     = "Hives"
	layoutName   = "layout"
	layoutText   = "vhd-with-hives\n"
	attrDir      = 0x10
	attrNormal   = 0x80
	cimExtension = ".cim"
)

// Option configures a Builder.
type Option func(*Builder)

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(b *Builder) { b.log = l } }

// WithLimits sets the decompression limits applied to every layer.
func WithLimits(l wclayer.Limits) Option { return func(b *Builder) { b.limits = &l } }

// WithUnmergedDeltaHives keeps a non-base layer's Hives/*_Delta files as they
// are instead of refusing the layer. For tests and inspection only: the result
// is marked UnmergedDeltas and must never be published.
func WithUnmergedDeltaHives() Option { return func(b *Builder) { b.keepDeltas = true } }

// Builder is the pure-Go builder. It is safe for concurrent use on different
// chains.
type Builder struct {
	log        *zap.Logger
	limits     *wclayer.Limits
	keepDeltas bool
}

// New returns a portable builder.
func New(opts ...Option) *Builder {
	b := &Builder{log: zap.NewNop()}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Capabilities implements builder.Builder.
func (b *Builder) Capabilities() builder.Capabilities {
	return builder.Capabilities{
		Name:          Name,
		Formats:       []string{builder.FormatForked},
		Format:        builder.FormatForked,
		HiveMerge:     false,
		Deterministic: true,
		Experimental:  true,
	}
}

// RegionSetID derives the CIM region-set GUID from a chainID, so that the same
// chain always gives byte-identical files. The GUID is shaped as an RFC 4122
// name-based (version 5 style) GUID over the chainID.
func RegionSetID(chainID string) cim.GUID {
	sum := sha256.Sum256([]byte("cimconv/region-set/v1\x00" + chainID))
	var g cim.GUID
	copy(g[:], sum[:16])
	// Data3 is stored little-endian, so its high nibble (the version) is in g[7].
	g[7] = (g[7] & 0x0f) | 0x50 // version 5
	g[8] = (g[8] & 0x3f) | 0x80 // RFC 4122 variant
	return g
}

// BuildLayer implements builder.Builder. When layer.ChainID is empty (local
// layer files, whose diffIDs are not known before reading them), the chainID
// is computed from the parent's and the diffID hashed while streaming, and the
// CIM is named after it at commit.
func (b *Builder) BuildLayer(ctx context.Context, layer builder.LayerSource, parent *builder.BuiltLayer, dir string) (_ *builder.BuiltLayer, retErr error) {
	if parent != nil && parent.CimDir != dir {
		return nil, fmt.Errorf("layer %s: parent CIM is in %s, not in the chain directory %s", layerName(layer), parent.CimDir, dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "layers"), 0o755); err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}
	var wopts []cim.WriterOption
	name := ""
	if layer.ChainID != "" {
		id := RegionSetID(layer.ChainID)
		name = id.String()
		wopts = append(wopts, cim.WithRegionSetID(id))
	} else {
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, err
		}
		name = "pending-" + hex.EncodeToString(rnd[:])
	}

	var w *cim.Writer
	var err error
	if parent == nil {
		w, err = cim.Create(dir, name, wopts...)
	} else {
		w, err = cim.CreateForked(dir, name, strings.TrimSuffix(parent.CimName, cimExtension), wopts...)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: create CIM: %w", layerName(layer), err)
	}
	side, err := os.MkdirTemp(filepath.Join(dir, "layers"), ".tmp-")
	if err == nil {
		err = os.Chmod(side, 0o755)
	}
	if err != nil {
		w.Close()
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = w.Close() // removes the partial CIM
		}
		_ = os.RemoveAll(side)
	}()

	rc, err := layer.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("layer %s: open: %w", layerName(layer), err)
	}
	defer rc.Close()

	opts := []wclayer.Option{
		wclayer.WithName(layerName(layer)),
		wclayer.WithBase(parent == nil),
		wclayer.WithParentLookup(func(p string) bool { ok, _ := w.Stat(p); return ok }),
	}
	if b.limits != nil {
		opts = append(opts, wclayer.WithLimits(*b.limits))
	}
	r, err := wclayer.NewReader(builder.ContextReader(ctx, rc), opts...)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}
	defer r.Close() // stops decompression goroutines when a layer fails early
	st := &layerState{b: b, w: w, r: r, base: parent == nil, side: side, layer: layer}
	if err := st.apply(ctx); err != nil {
		return nil, err
	}
	diffID, err := r.DiffID()
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}
	if layer.DiffID != "" && diffID != layer.DiffID {
		return nil, fmt.Errorf("layer %s: diffID mismatch: the image config says %s, the layer's uncompressed bytes hash to %s", layerName(layer), layer.DiffID, diffID)
	}
	chainID := layer.ChainID
	if chainID == "" {
		parentChain := ""
		if parent != nil {
			parentChain = parent.ChainID
		}
		chainID = builder.ChainID(parentChain, diffID)
		id := RegionSetID(chainID)
		name = id.String()
		if err := w.Rename(name, id); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
		}
	}
	return st.complete(parent, dir, chainID, diffID, name)
}

// complete does what follows a layer's entries, for BuildLayer and Finish:
// base-layer processing (or carrying the parent's side files forward), the
// side directory moved into place, the commit, and the BuiltLayer.
func (s *layerState) complete(parent *builder.BuiltLayer, dir, chainID, diffID, name string) (*builder.BuiltLayer, error) {
	b, w, side, layer := s.b, s.w, s.side, s.layer
	if parent == nil {
		if err := s.finishBase(); err != nil {
			return nil, err
		}
	} else if err := carryForward(parent, side); err != nil {
		return nil, fmt.Errorf("layer %s: carry parent hives forward: %w", layerName(layer), err)
	}
	sideFiles, err := listFiles(side)
	if err != nil {
		return nil, err
	}
	finalSide := builder.SideDir(dir, chainID)
	if err := os.RemoveAll(finalSide); err != nil {
		return nil, err
	}
	if len(sideFiles) > 0 {
		if err := os.Rename(side, finalSide); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
		}
	}
	if err := w.Commit(); err != nil {
		os.RemoveAll(finalSide)
		return nil, fmt.Errorf("layer %s: commit CIM: %w", layerName(layer), err)
	}
	out := &builder.BuiltLayer{
		ChainID:        chainID,
		DiffID:         diffID,
		SourceDigest:   layer.Digest,
		CimDir:         dir,
		CimName:        name + cimExtension,
		CimFiles:       w.Files(),
		Format:         builder.FormatForked,
		CimVersion:     CimVersion,
		Builder:        Name,
		Experimental:   true,
		UnmergedDeltas: s.unmerged || (parent != nil && parent.UnmergedDeltas),
		Parent:         parent,
	}
	if len(sideFiles) > 0 {
		out.SideDir, out.SideFiles = finalSide, sideFiles
	}
	b.log.Debug("layer built", zap.String("chainID", chainID), zap.String("cim", out.CimName), zap.Int("files", len(out.CimFiles)))
	return out, nil
}

func layerName(l builder.LayerSource) string {
	if l.Digest != "" {
		return l.Digest
	}
	return l.DiffID
}

// layerState applies the entries of one layer to a CIM writer.
type layerState struct {
	b        *Builder
	w        *cim.Writer
	r        *wclayer.Reader
	base     bool
	side     string
	layer    builder.LayerSource
	unmerged bool
	dirs     map[string]bool // upper-cased dirs created implicitly or seen
}

func (s *layerState) apply(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := s.r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err // wclayer errors already name the layer and entry
		}
		if err := s.applyEntry(e); err != nil {
			return fmt.Errorf("layer %s entry %q: %w", layerName(s.layer), e.TarName, err)
		}
	}
}

func (s *layerState) applyEntry(e *wclayer.Entry) error {
	if !s.base && e.Type == wclayer.TypeFile && isDeltaHive(e.Path) {
		if !s.b.keepDeltas {
			return ErrDeltaHives
		}
		s.unmerged = true
	}
	if err := s.ensureParents(e.Path); err != nil {
		return err
	}
	info := &cim.FileInfo{
		Attributes:         e.Attributes,
		CreationTime:       e.CreationTime,
		LastWriteTime:      e.LastWriteTime,
		ChangeTime:         e.ChangeTime,
		LastAccessTime:     e.LastAccessTime,
		SecurityDescriptor: e.SecurityDescriptor,
		ExtendedAttributes: e.ExtendedAttributes,
	}
	switch e.Type {
	case wclayer.TypeDir:
		info.Attributes |= attrDir
		return s.w.AddFile(e.Path, info, 0)
	case wclayer.TypeSymlink:
		info.ReparseData = e.ReparseData
		return s.w.AddFile(e.Path, info, 0)
	case wclayer.TypeFile:
		if err := s.w.AddFile(e.Path, info, e.Size); err != nil {
			return err
		}
		var dst io.Writer = s.w
		var hiveFile *os.File
		if s.base {
			if h, ok := baseHive(e.Path); ok {
				f, err := os.Create(filepath.Join(s.side, hivesDir, h.base))
				if errors.Is(err, fs.ErrNotExist) {
					if err = os.MkdirAll(filepath.Join(s.side, hivesDir), 0o755); err == nil {
						f, err = os.Create(filepath.Join(s.side, hivesDir, h.base))
					}
				}
				if err != nil {
					return fmt.Errorf("keep base hive beside the CIM: %w", err)
				}
				hiveFile = f
				dst = io.MultiWriter(s.w, f)
			}
		}
		_, err := io.CopyN(dst, s.r, e.Size)
		if hiveFile != nil {
			if cerr := hiveFile.Close(); err == nil {
				err = cerr
			}
		}
		return err
	case wclayer.TypeStream:
		if err := s.w.AddAlternateStream(e.Path, e.StreamName, e.Size); err != nil {
			return err
		}
		_, err := io.CopyN(s.w, s.r, e.Size)
		return err
	case wclayer.TypeHardLink:
		return s.w.AddLink(e.Linkname, e.Path)
	case wclayer.TypeWhiteout:
		if s.base {
			return fmt.Errorf("whiteout in a base layer")
		}
		if err := s.w.Unlink(e.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// A whiteout of a path no parent has is harmless: there is nothing to hide.
		return nil
	}
	return fmt.Errorf("unsupported entry type %v", e.Type)
}

// ensureParents creates directories a tar omitted, as tar extraction does.
// Windows exports list every directory, so this only matters for hand-made
// layers; the implied directories get the plain directory attribute.
func (s *layerState) ensureParents(p string) error {
	parent := p
	var missing []string
	for {
		i := strings.LastIndexByte(parent, '/')
		if i < 0 {
			break
		}
		parent = parent[:i]
		if s.dirs[strings.ToUpper(parent)] {
			break
		}
		ok, isDir := s.w.Stat(parent)
		if ok {
			if !isDir {
				return fmt.Errorf("parent %q is not a directory", parent)
			}
			break
		}
		missing = append(missing, parent)
	}
	if s.dirs == nil {
		s.dirs = map[string]bool{}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := s.w.AddFile(missing[i], &cim.FileInfo{Attributes: attrDir}, 0); err != nil {
			return err
		}
	}
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		s.dirs[strings.ToUpper(p[:i])] = true
	}
	return nil
}

// finishBase does the base-layer processing CimFS's layer import does: the
// Hives directory with Hives/<X>_BASE hard links to the config hives, and the
// layout file, both inside the CIM and kept beside it for child layers.
func (s *layerState) finishBase() error {
	var linked bool
	for _, h := range hives {
		src := configDir + "/" + h.name
		if ok, isDir := s.w.Stat(src); !ok || isDir {
			continue
		}
		if !linked {
			if ok, _ := s.w.Stat(hivesDir); !ok {
				if err := s.w.AddFile(hivesDir, &cim.FileInfo{Attributes: attrDir}, 0); err != nil {
					return fmt.Errorf("base layer processing: %w", err)
				}
			}
			linked = true
		}
		if err := s.w.AddLink(src, hivesDir+"/"+h.base); err != nil {
			return fmt.Errorf("base layer processing: link %s: %w", h.base, err)
		}
	}
	if !linked {
		// Not a Windows OS base layer (no registry hives): nothing to process.
		return nil
	}
	if err := s.w.AddFile(layoutName, &cim.FileInfo{Attributes: attrNormal}, int64(len(layoutText))); err != nil {
		return fmt.Errorf("base layer processing: %w", err)
	}
	if _, err := io.WriteString(s.w, layoutText); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.side, layoutName), []byte(layoutText), 0o644)
}

// carryForward links the parent's Hives/*_BASE and layout into this layer's
// side directory, so that every layer directory is complete on its own (a
// child's hive merge on Windows reads its immediate parent's directory).
func carryForward(parent *builder.BuiltLayer, side string) error {
	for _, f := range parent.SideFiles {
		src := filepath.Join(parent.SideDir, filepath.FromSlash(f))
		dst := filepath.Join(side, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := builder.LinkOrCopy(src, dst); err != nil {
			return err
		}
	}
	return nil
}

func listFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	sort.Strings(files)
	return files, err
}

func baseHive(p string) (hive, bool) {
	dir, name := splitLast(p)
	if !strings.EqualFold(dir, configDir) {
		return hive{}, false
	}
	for _, h := range hives {
		if strings.EqualFold(name, h.name) {
			return h, true
		}
	}
	return hive{}, false
}

func isDeltaHive(p string) bool {
	dir, name := splitLast(p)
	if !strings.EqualFold(dir, hivesDir) {
		return false
	}
	return strings.HasSuffix(strings.ToUpper(name), "_DELTA")
}

func splitLast(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}
