package portable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/cim"
	reghive "github.com/cimconv/cimconv/internal/hive"
	"github.com/cimconv/cimconv/internal/upcase"
)

// HiveMerge says what the builder does with the delta registry hives of a
// non-base layer.
type HiveMerge int

const (
	// HiveMergePortable merges each delta onto the nearest ancestor's merged
	// hive with internal/hive, as hcsshim does with offreg (the default).
	// The output is marked with builder.HiveMergePortable.
	HiveMergePortable HiveMerge = iota
	// HiveMergeRefuse refuses such a layer with ErrDeltaHives (the builder's
	// behaviour before the pure-Go merge existed).
	HiveMergeRefuse
	// hiveMergeKeep keeps deltas unmerged (WithUnmergedDeltaHives).
	hiveMergeKeep
)

// ParseHiveMerge parses a --hive-merge value: "portable" or "refuse".
func ParseHiveMerge(s string) (HiveMerge, error) {
	switch s {
	case "portable":
		return HiveMergePortable, nil
	case "refuse":
		return HiveMergeRefuse, nil
	}
	return 0, fmt.Errorf("hive merge %q: want portable or refuse", s)
}

func (m HiveMerge) String() string {
	switch m {
	case HiveMergePortable:
		return "portable"
	case HiveMergeRefuse:
		return "refuse"
	}
	return "keep-unmerged"
}

// WithHiveMerge sets what happens to delta hives (default HiveMergePortable).
func WithHiveMerge(m HiveMerge) Option { return func(b *Builder) { b.hiveMerge = m } }

// deltaHive is a delta hive a layer carries, kept in a temporary file until
// Finish merges it.
type deltaHive struct {
	h    hive
	path string // in the layer, as the tar spells it
	file string
	info cim.FileInfo // the delta's times: the merged hive gets them too
}

// deltaOf returns the hive a Hives/<NAME>_Delta path is the delta of
// (names compare case-insensitively, as hcsshim's do on Windows).
func deltaOf(p string) (hive, bool) {
	return findHive(p, hivesDir, func(h hive) string { return h.delta })
}

// keepDelta tees a delta hive's data into a temporary file for Finish.
func (p *prepared) keepDelta(h hive, path string, e cim.FileInfo, src io.Reader) (io.Reader, func() error, error) {
	if p.deltaDir == "" {
		d, err := os.MkdirTemp(filepath.Join(p.dir, "layers"), ".tmp-delta-")
		if err != nil {
			return nil, nil, err
		}
		p.deltaDir = d
	}
	f, err := os.Create(filepath.Join(p.deltaDir, h.delta))
	if err != nil {
		return nil, nil, err
	}
	if p.deltas == nil {
		p.deltas = map[string]deltaHive{}
	}
	p.deltas[h.name] = deltaHive{h: h, path: path, file: f.Name(), info: e}
	return io.TeeReader(src, f), f.Close, nil
}

// mergeHives does hcsshim's non-base layer processing: for each hive whose
// delta the layer carries (in hcsshim's order), merge the nearest
// ancestor's Hives/<NAME>_BASE with it, keep the result as this layer's
// side file and add it to the CIM as Hives/<NAME>_BASE. The deltas
// themselves are already in the CIM at their tar paths.
//
// The merges are independent (each its own base, delta and output file), so
// they run side by side, mergeParallel at a time: SYSTEM's next to
// SOFTWARE's, the two large ones. They go into the CIM afterwards, in
// hcsshim's order, and a failure is reported for the first failing hive in
// that order, whichever finished first.
func (s *layerState) mergeHives(ctx context.Context, parent *builder.BuiltLayer) error {
	type merge struct {
		h         hive
		d         deltaHive
		base, out string
		size      int64
		err       error
	}
	var merges []*merge
	for _, h := range hives {
		d, ok := s.deltas[h.name]
		if !ok {
			continue
		}
		basePath, ok := ancestorHive(parent, h.base)
		if !ok {
			return fmt.Errorf("delta hive %s: no ancestor layer has %s/%s to merge it onto", d.path, hivesDir, h.base)
		}
		out := filepath.Join(s.side, hivesDir, h.base)
		// The side file may be a link to the parent's (carried forward):
		// never write through it.
		if err := os.Remove(out); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		merges = append(merges, &merge{h: h, d: d, base: basePath, out: out})
	}
	// Each merge keeps its own error (nil returned to the group): the
	// report below goes by hcsshim's order, not by which failed first.
	var g errgroup.Group
	g.SetLimit(mergeParallel)
	for _, m := range merges {
		g.Go(func() error {
			defer func() {
				if r := recover(); r != nil {
					m.err = fmt.Errorf("panic: %v", r)
				}
			}()
			m.size, m.err = mergeFilesFunc(ctx, m.out, m.base, m.d.file, m.d.path)
			return nil
		})
	}
	_ = g.Wait()
	for _, m := range merges {
		if m.err != nil {
			return fmt.Errorf("merge %s onto the parent's %s/%s: %w", m.d.path, hivesDir, m.h.base, m.err)
		}
	}
	for _, m := range merges {
		if err := s.addHive(m.h, m.d.info, m.out, m.size); err != nil {
			return err
		}
		s.merged = true
	}
	return nil
}

// mergeParallel is how many of a layer's hive merges run at once. Each
// holds its base hive mapped and a few MiB of output; the large ones are two.
const mergeParallel = 2

// mergeFilesFunc is mergeFiles; tests replace it.
var mergeFilesFunc = mergeFiles

func (s *layerState) addHive(h hive, info cim.FileInfo, path string, size int64) error {
	p := hivesDir + "/" + h.base
	if err := s.ensureParents(p); err != nil {
		return err
	}
	if ok, _ := s.w.Stat(hivesDir); !ok {
		if err := s.w.AddFile(hivesDir, &cim.FileInfo{Attributes: attrDir}, 0); err != nil {
			return err
		}
	}
	fi := cim.FileInfo{
		Attributes:   attrNormal,
		CreationTime: info.CreationTime, LastWriteTime: info.LastWriteTime,
		ChangeTime: info.ChangeTime, LastAccessTime: info.LastAccessTime,
	}
	if err := s.w.AddFile(p, &fi, size); err != nil {
		return fmt.Errorf("add merged hive %s: %w", p, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if n, err := io.Copy(s.w, f); err != nil || n != size {
		return fmt.Errorf("add merged hive %s: wrote %d of %d bytes: %v", p, n, size, err)
	}
	return nil
}

// ancestorHive finds the nearest layer from parent up that keeps
// Hives/<base> beside its CIM.
func ancestorHive(parent *builder.BuiltLayer, base string) (string, bool) {
	want := hivesDir + "/" + base
	for l := parent; l != nil; l = l.Parent {
		for _, f := range l.SideFiles {
			if upcase.Equal(f, want) {
				return filepath.Join(l.SideDir, filepath.FromSlash(f)), true
			}
		}
	}
	return "", false
}

// mergeFiles merges the delta hive file onto the base hive file into out.
func mergeFiles(ctx context.Context, out, base, delta, deltaName string) (int64, error) {
	bb, releaseBase, err := reghive.MapFile(base)
	if err != nil {
		return 0, err
	}
	defer releaseBase()
	db, releaseDelta, err := reghive.MapFile(delta)
	if err != nil {
		return 0, err
	}
	defer releaseDelta()
	f, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	n, err := reghive.MergeHivesTo(ctx, f,
		reghive.Input{Name: "parent's " + hivesDir + "/" + filepath.Base(base), Data: bb},
		[]reghive.Input{{Name: deltaName, Data: db}})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return 0, err
	}
	return n, nil
}
