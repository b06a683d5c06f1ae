package portable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/wclayer"
)

var _ builder.TwoPhase = (*Builder)(nil)

// op is one layer entry as Finish replays it: metadata and references to
// staged data only.
type op struct {
	typ     wclayer.EntryType
	tarName string
	path    string
	stream  string // TypeStream
	link    string // TypeHardLink: target
	info    cim.FileInfo
	data    cim.StagedStream // TypeFile, TypeStream
}

// prepared is a layer whose data is staged in the chain directory.
type prepared struct {
	b      *Builder
	layer  builder.LayerSource
	depth  int
	dir    string
	id     cim.GUID
	stager *cim.Stager
	side   string // temporary side directory (base hives teed here)
	ops    []op
	diffID string

	unmerged bool
	deltaDir string               // temporary copies of delta hives
	deltas   map[string]deltaHive // by hive name
	sds      map[string][]byte    // interned security descriptors

	mu    sync.Mutex
	state int // statePrepared, stateFinished or stateDiscarded
}

const (
	statePrepared = iota
	stateFinished
	stateDiscarded
)

// Prepare implements builder.TwoPhase: it streams the layer once, writes its
// file and stream data into dir through a cim.Stager (region indexes follow
// from depth), tees a base layer's registry hives into a temporary side
// directory, checks the diffID and keeps the entries' metadata for Finish.
// Entries that depend on the parent (hard links to its files, streams on
// them, whiteouts) are checked when Finish applies them to the parent's tree.
func (b *Builder) Prepare(ctx context.Context, layer builder.LayerSource, depth int, dir string) (builder.Prepared, error) {
	if layer.ChainID == "" {
		return nil, fmt.Errorf("layer %s: prepare needs the layer's chainID", layerName(layer))
	}
	// The parent's tree is not known yet: Finish checks references to it
	// when it applies them.
	p, err := b.prepare(ctx, layer, depth, dir, RegionSetID(layer.ChainID), func(string) bool { return true })
	if err != nil {
		return nil, err
	}
	return p, nil
}

// prepare stages the layer's data for region set id. parentHas answers
// whether a path exists below the layer (nil for none).
func (b *Builder) prepare(ctx context.Context, layer builder.LayerSource, depth int, dir string, id cim.GUID, parentHas func(string) bool) (_ *prepared, retErr error) {
	if depth < 0 {
		return nil, fmt.Errorf("layer %s: negative chain depth %d", layerName(layer), depth)
	}
	if err := os.MkdirAll(filepath.Join(dir, "layers"), 0o755); err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}
	p := &prepared{b: b, layer: layer, depth: depth, dir: dir, id: id, sds: map[string][]byte{}}
	defer func() {
		if retErr != nil {
			_ = p.Discard()
		}
	}()
	var err error
	if p.stager, err = cim.Stage(dir, p.id, cim.RegionsPerImage*depth); err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}
	side, err := os.MkdirTemp(filepath.Join(dir, "layers"), ".tmp-")
	if err == nil {
		p.side = side
		err = os.Chmod(side, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}

	rc, err := layer.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("layer %s: open: %w", layerName(layer), err)
	}
	defer rc.Close()
	opts := []wclayer.Option{
		wclayer.WithName(layerName(layer)),
		wclayer.WithBase(depth == 0),
	}
	if parentHas != nil {
		opts = append(opts, wclayer.WithParentLookup(parentHas))
	}
	if b.limits != nil {
		opts = append(opts, wclayer.WithLimits(*b.limits))
	}
	r, err := wclayer.NewReader(builder.ContextReader(ctx, rc), opts...)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}
	defer r.Close()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err // wclayer errors already name the layer and entry
		}
		if err := p.record(e, r); err != nil {
			return nil, fmt.Errorf("layer %s entry %q: %w", layerName(layer), e.TarName, err)
		}
	}
	if p.diffID, err = r.DiffID(); err != nil {
		return nil, fmt.Errorf("layer %s: %w", layerName(layer), err)
	}
	if layer.DiffID != "" && p.diffID != layer.DiffID {
		// The layer's bytes passed the registry's digest check: they will
		// hash the same on every retry.
		return nil, errdefs.Permanent(fmt.Errorf("layer %s: diffID mismatch: the image config says %s, the layer's uncompressed bytes hash to %s", layerName(layer), layer.DiffID, p.diffID))
	}
	b.log.Debug("layer prepared", zap.String("layer", layerName(layer)), zap.Int("depth", depth), zap.Int("entries", len(p.ops)))
	return p, nil
}

// record stages an entry's data and logs its metadata, refusing what can be
// refused without the parent's tree.
func (p *prepared) record(e *wclayer.Entry, r io.Reader) error {
	base := p.depth == 0
	var delta *hive
	if !base && e.Type == wclayer.TypeFile && isDeltaHive(e.Path) {
		switch p.b.hiveMerge {
		case HiveMergeRefuse:
			return ErrDeltaHives
		case hiveMergeKeep:
			p.unmerged = true
		default:
			// Hives hcsshim does not know are kept as files, unmerged.
			if h, ok := deltaOf(e.Path); ok {
				delta = &h
			}
		}
	}
	o := op{typ: e.Type, tarName: e.TarName, path: e.Path, info: cim.FileInfo{
		Attributes:         e.Attributes,
		CreationTime:       e.CreationTime,
		LastWriteTime:      e.LastWriteTime,
		ChangeTime:         e.ChangeTime,
		LastAccessTime:     e.LastAccessTime,
		SecurityDescriptor: p.internSD(e.SecurityDescriptor),
		ExtendedAttributes: e.ExtendedAttributes,
	}}
	var err error
	switch e.Type {
	case wclayer.TypeDir:
		o.info.Attributes |= attrDir
	case wclayer.TypeSymlink:
		o.info.ReparseData = e.ReparseData
	case wclayer.TypeFile:
		src := io.LimitReader(r, e.Size)
		var hiveFile *os.File
		var closeDelta func() error
		if delta != nil {
			if src, closeDelta, err = p.keepDelta(*delta, e.Path, o.info, src); err != nil {
				return fmt.Errorf("keep delta hive for the merge: %w", err)
			}
		}
		if base {
			if h, ok := baseHive(e.Path); ok {
				if hiveFile, err = createSideFile(p.side, h.base); err != nil {
					return fmt.Errorf("keep base hive beside the CIM: %w", err)
				}
				src = io.TeeReader(src, hiveFile)
			}
		}
		o.data, err = p.stager.AddStream(src, e.Size)
		if closeDelta != nil {
			if cerr := closeDelta(); err == nil {
				err = cerr
			}
		}
		if hiveFile != nil {
			if cerr := hiveFile.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return err
		}
	case wclayer.TypeStream:
		o.stream = e.StreamName
		if o.data, err = p.stager.AddStream(r, e.Size); err != nil {
			return err
		}
	case wclayer.TypeHardLink:
		o.link = e.Linkname
	case wclayer.TypeWhiteout:
		if base {
			return fmt.Errorf("whiteout in a base layer")
		}
	default:
		return fmt.Errorf("unsupported entry type %v", e.Type)
	}
	p.ops = append(p.ops, o)
	return nil
}

func createSideFile(side, name string) (*os.File, error) {
	f, err := os.Create(filepath.Join(side, hivesDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Join(side, hivesDir), 0o755); err == nil {
			f, err = os.Create(filepath.Join(side, hivesDir, name))
		}
	}
	return f, err
}

// internSD keeps one copy of each distinct security descriptor: a layer has
// hundreds of thousands of entries and a handful of SDs.
func (p *prepared) internSD(sd []byte) []byte {
	if len(sd) == 0 {
		return nil
	}
	if c, ok := p.sds[string(sd)]; ok {
		return c
	}
	c := append([]byte(nil), sd...)
	p.sds[string(c)] = c
	return c
}

// Finish implements builder.TwoPhase: it creates the layer's CIM on top of
// parent, adopting the staged data, replays the entries, does the base-layer processing (or carries the parent's side
// files forward) and commits. On error nothing of the layer is left in the
// chain directory, staged data included.
func (b *Builder) Finish(ctx context.Context, pp builder.Prepared, parent *builder.BuiltLayer) (_ *builder.BuiltLayer, retErr error) {
	p, ok := pp.(*prepared)
	if !ok || p == nil {
		return nil, fmt.Errorf("finish layer: %T was not prepared by the portable builder", pp)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	name := layerName(p.layer)
	switch p.state {
	case stateFinished:
		return nil, fmt.Errorf("layer %s: already finished", name)
	case stateDiscarded:
		return nil, fmt.Errorf("layer %s: prepared data was discarded", name)
	}
	defer func() {
		if retErr != nil {
			_ = p.cleanup()
			p.state = stateDiscarded
		}
	}()
	switch {
	case parent == nil && p.depth != 0:
		return nil, fmt.Errorf("layer %s: prepared at chain depth %d but finished as a base layer", name, p.depth)
	case parent != nil && p.depth == 0:
		return nil, fmt.Errorf("layer %s: prepared as a base layer but finished on parent %s", name, parent.ChainID)
	case parent != nil && parent.CimDir != p.dir:
		return nil, fmt.Errorf("layer %s: parent CIM is in %s, not in the chain directory %s", name, parent.CimDir, p.dir)
	}
	parentChain := ""
	if parent != nil {
		parentChain = parent.ChainID
	}
	if want := builder.ChainID(parentChain, p.diffID); want != p.layer.ChainID {
		return nil, fmt.Errorf("layer %s: chainID %s does not follow from the parent's chainID and the diffID %s (want %s)", name, p.layer.ChainID, p.diffID, want)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	id := RegionSetID(p.layer.ChainID)
	cimName := id.String()
	var w *cim.Writer
	var err error
	if parent == nil {
		w, err = cim.Create(p.dir, cimName, cim.WithRegionSetID(p.id), cim.WithStaged(p.stager))
	} else {
		w, err = cim.CreateForked(p.dir, cimName, strings.TrimSuffix(parent.CimName, cimExtension), cim.WithRegionSetID(p.id), cim.WithStaged(p.stager))
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: create CIM: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			_ = w.Close() // removes the partial CIM and the adopted data
		}
	}()
	if id != p.id {
		// Staged under a temporary ID (the chainID was learnt while
		// streaming): take the deterministic one before anything is final.
		if err := w.Rename(cimName, id); err != nil {
			return nil, fmt.Errorf("layer %s: %w", name, err)
		}
	}
	st := &layerState{b: b, w: w, base: parent == nil, side: p.side, layer: p.layer, unmerged: p.unmerged, deltas: p.deltas}
	for i := range p.ops {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		o := &p.ops[i]
		if err := st.replay(o); err != nil {
			return nil, fmt.Errorf("layer %s entry %q: %w", name, o.tarName, err)
		}
	}
	out, err := st.complete(ctx, parent, p.dir, p.layer.ChainID, p.diffID, cimName)
	if err != nil {
		return nil, err
	}
	_ = os.RemoveAll(p.side) // renamed into place, or empty
	if p.deltaDir != "" {
		_ = os.RemoveAll(p.deltaDir)
	}
	p.ops, p.sds = nil, nil
	p.state = stateFinished
	return out, nil
}

// replay applies a recorded entry to the CIM.
func (s *layerState) replay(o *op) error {
	if o.typ == wclayer.TypeWhiteout {
		return s.whiteout(o.path)
	}
	if err := s.ensureParents(o.path); err != nil {
		return err
	}
	switch o.typ {
	case wclayer.TypeDir:
		if ok, isDir := s.w.Stat(o.path); ok && !isDir {
			// If this layer put the file, symlink or hard link here in
			// place of a directory, the directory's subtree left the tree
			// and s.dirs may still list it. wclayer refuses entries below
			// a non-directory of the layer until it is whited out (which
			// drops s.dirs too) or listed again as a directory (here), so
			// checking here spares every file a Stat.
			s.dirs = nil
		}
	case wclayer.TypeSymlink:
		if ok, isDir := s.w.Stat(o.path); ok && isDir {
			// A reparse point replaces a directory with its subtree. A
			// junction or directory symlink is a directory to Stat, so
			// the check above would miss it once the directory is listed
			// again; symlinks are rare enough to check each.
			s.dirs = nil
		}
	}
	switch o.typ {
	case wclayer.TypeDir, wclayer.TypeSymlink:
		return s.w.AddFile(o.path, &o.info, 0)
	case wclayer.TypeFile:
		return s.w.AddFileStaged(o.path, &o.info, o.data)
	case wclayer.TypeStream:
		return s.w.AddAlternateStreamStaged(o.path, o.stream, o.data)
	case wclayer.TypeHardLink:
		return s.w.AddLink(o.link, o.path)
	}
	return fmt.Errorf("unsupported entry type %v", o.typ)
}

// whiteout deletes p and its subtree. A path that does not exist, below a
// missing directory or a file included, is no error and creates no
// directory: a tar may list a deleted directory's children after it, and
// the layers' merged view (wclayer.MergeView) and hcsshim's importer
// (CimDeletePath) create no parents for a whiteout either.
func (s *layerState) whiteout(p string) error {
	if ok, _ := s.w.Stat(p); !ok {
		return nil
	}
	// The directories s.dirs lists below p leave the tree. They are keyed by
	// spelling and p may be spelt otherwise, so all are forgotten; the next
	// entries find theirs again with a Stat.
	s.dirs = nil
	return s.w.Unlink(p)
}

// Discard implements builder.Prepared.
func (p *prepared) Discard() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != statePrepared {
		return nil
	}
	p.state = stateDiscarded
	return p.cleanup()
}

func (p *prepared) cleanup() error {
	var errs []error
	if p.stager != nil {
		errs = append(errs, p.stager.Close())
	}
	if p.side != "" {
		errs = append(errs, os.RemoveAll(p.side))
	}
	if p.deltaDir != "" {
		errs = append(errs, os.RemoveAll(p.deltaDir))
	}
	p.ops, p.sds, p.deltas = nil, nil, nil
	return errors.Join(errs...)
}
