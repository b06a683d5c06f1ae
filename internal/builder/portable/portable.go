package portable

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
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
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/upcase"
	"github.com/cimconv/cimconv/internal/wclayer"
)

// Name is the builder's name in flags, logs and artifact annotations.
const Name = "portable"

// CimVersion is the CIM format version this builder writes.
const CimVersion = "3.0"

// ErrDeltaHives is returned, with WithHiveMerge(HiveMergeRefuse), for a
// non-base layer that carries delta registry hives.
var ErrDeltaHives = errdefs.New(errdefs.ErrPermanent, "the layer carries delta registry hives and the portable hive merge is off (--hive-merge=refuse); use --hive-merge=portable, or the Windows builder (offreg ORMergeHives) with --builder hcsshim on a Windows worker")

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
func WithUnmergedDeltaHives() Option { return func(b *Builder) { b.hiveMerge = hiveMergeKeep } }

// Builder is the pure-Go builder. It is safe for concurrent use on different
// chains.
type Builder struct {
	log       *zap.Logger
	limits    *wclayer.Limits
	hiveMerge HiveMerge
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
	c := builder.Capabilities{
		Name:          Name,
		Formats:       []string{builder.FormatForked},
		Format:        builder.FormatForked,
		HiveMerge:     b.hiveMerge == HiveMergePortable,
		Deterministic: true,
		Experimental:  true,
	}
	if c.HiveMerge {
		c.HiveMergeName = builder.HiveMergePortable
	}
	return c
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

// BuildLayer implements builder.Builder: it is Prepare then Finish. When
// layer.ChainID is empty (local layer files, whose diffIDs are not known
// before reading them), the data is staged under a temporary region-set ID
// and the chainID is computed from the parent's and the diffID hashed while
// streaming; Finish names the CIM after it. parent must be a layer this
// builder returned: its Parent links give the chain depth.
func (b *Builder) BuildLayer(ctx context.Context, layer builder.LayerSource, parent *builder.BuiltLayer, dir string) (*builder.BuiltLayer, error) {
	if parent != nil && parent.CimDir != dir {
		return nil, fmt.Errorf("layer %s: parent CIM is in %s, not in the chain directory %s", layerName(layer), parent.CimDir, dir)
	}
	depth, lookup, closeParent, err := parentTree(parent)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}
	var id cim.GUID
	if layer.ChainID != "" {
		id = RegionSetID(layer.ChainID)
	} else if _, err := rand.Read(id[:]); err != nil {
		closeParent()
		return nil, err
	}
	p, err := b.prepare(ctx, layer, depth, dir, id, lookup)
	closeParent()
	if err != nil {
		return nil, err
	}
	if p.layer.ChainID == "" {
		p.layer.ChainID = builder.ChainID(chainIDOf(parent), p.diffID)
	}
	return b.Finish(ctx, p, parent)
}

// parentTree returns the chain depth of a child of parent and a lookup in
// the parent's tree (nil for a base layer), so that references to the
// parent (hard links, streams) are checked while streaming, as wclayer
// checks them. close releases the parent's CIM.
func parentTree(parent *builder.BuiltLayer) (depth int, lookup func(string) bool, close func(), err error) {
	if parent == nil {
		return 0, nil, func() {}, nil
	}
	for l := parent; l != nil; l = l.Parent {
		depth++
	}
	im, err := cim.Open(filepath.Join(parent.CimDir, parent.CimName))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("parent %s: %w", parent.ChainID, err)
	}
	lookup = func(p string) bool { _, err := im.Stat(p); return err == nil }
	return depth, lookup, func() { im.Close() }, nil
}

func chainIDOf(l *builder.BuiltLayer) string {
	if l == nil {
		return ""
	}
	return l.ChainID
}

// complete does what follows a layer's entries: base-layer processing (or
// carrying the parent's side files forward), the side directory moved into
// place, the commit, and the BuiltLayer.
func (s *layerState) complete(ctx context.Context, parent *builder.BuiltLayer, dir, chainID, diffID, name string) (*builder.BuiltLayer, error) {
	b, w, side, layer := s.b, s.w, s.side, s.layer
	if parent == nil {
		if err := s.finishBase(); err != nil {
			return nil, err
		}
	} else {
		if err := carryForward(parent, side); err != nil {
			return nil, fmt.Errorf("layer %s: carry parent hives forward: %w", layerName(layer), err)
		}
		if err := s.mergeHives(ctx, parent); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
		}
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
	if s.merged {
		out.HiveMerge = builder.HiveMergePortable
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
	base     bool
	side     string
	layer    builder.LayerSource
	unmerged bool
	deltas   map[string]deltaHive // by hive name: delta hives to merge
	merged   bool                 // a delta hive was merged
	dirs     map[string]bool      // parents of the layer's entries, by spelling; dropped when a directory may leave the tree
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
		if s.dirs[parent] { // by spelling: another spelling is checked with Stat
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
		s.dirs[p[:i]] = true
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
	return findHive(p, configDir, func(h hive) string { return h.name })
}

// findHive returns the hive whose file name (as name gives it) p is,
// inside dir; both compare case-insensitively, as the CIM does (upcase).
func findHive(p, dir string, name func(hive) string) (hive, bool) {
	d, n := splitLast(p)
	if !upcase.Equal(d, dir) {
		return hive{}, false
	}
	for _, h := range hives {
		if upcase.Equal(n, name(h)) {
			return h, true
		}
	}
	return hive{}, false
}

func isDeltaHive(p string) bool {
	dir, name := splitLast(p)
	if !upcase.Equal(dir, hivesDir) {
		return false
	}
	return strings.HasSuffix(upcase.Fold(name), "_DELTA")
}

func splitLast(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}
