package cim

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
)

// RegionsPerImage is the number of regions this package writes per image
// (metadata, data, small data). A forked image's own regions start after its
// ancestors', so the image at depth d of a chain written by this package has
// base region index RegionsPerImage*d.
const RegionsPerImage = 3

// Stager writes an image's file data before the image's parent is known:
// its data and small-data region files, under the temporary names a Writer
// uses, with the same region choice, alignment and all-zero-to-sparse rules
// as Writer.Write. Data offsets are final because a forked image's region
// indexes depend only on how many regions its ancestors have (base). A
// Writer adopts the region files with WithStaged; entries then point at the
// staged streams with AddFileStaged and AddAlternateStreamStaged, and the
// committed image is byte-identical to one written with AddFile + Write in
// the same order.
//
// A Stager is not safe for concurrent use; it may be handed from the
// goroutine that staged to the one that adopts.
type Stager struct {
	mu      sync.Mutex
	w       *Writer // headless: only its data and small regions are used
	base    int
	adopted bool
}

// StagedStream is file or stream data written by a Stager.
type StagedStream struct {
	s     stream
	owner *Stager
}

// Size is the stream's length in bytes.
func (s StagedStream) Size() int64 { return s.s.size() }

// Sparse reports whether the stream was all zeros and is stored without data.
func (s StagedStream) Sparse() bool { return s.s.sparse() }

// Stage starts staging the data of the image with region-set ID id whose
// own regions start at global region index base (0 for a base image,
// RegionsPerImage*depth in a chain written by this package). Only
// WithVersion is honoured among opts; the adopting Writer must use the same
// version and ID.
func Stage(dir string, id GUID, base int, opts ...WriterOption) (_ *Stager, err error) {
	o := writerOptions{version: version{3, 0}}
	for _, f := range opts {
		f(&o)
	}
	switch {
	case o.version.Major < 2 || o.version.Major > 3:
		return nil, fmt.Errorf("stage CIM data %s: unsupported format version %s (2.x or 3.x)", id, o.version)
	case o.staged != nil:
		return nil, fmt.Errorf("stage CIM data %s: WithStaged is an option of Create, not Stage", id)
	case o.id != nil && *o.id != id:
		return nil, fmt.Errorf("stage CIM data %s: WithRegionSetID(%s) contradicts the ID given", id, *o.id)
	case base < 0 || base%RegionsPerImage != 0:
		return nil, fmt.Errorf("stage CIM data %s: base region index %d is not a multiple of %d", id, base, RegionsPerImage)
	case base+RegionsPerImage > maxRegions:
		return nil, fmt.Errorf("stage CIM data %s: chain has %d regions, limit %d", id, base+RegionsPerImage, maxRegions)
	}
	w := &Writer{dir: dir, name: id.String(), ver: o.version, id: id, base: base}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if w.data, err = w.newRegion(RegionData); err != nil {
		return nil, fmt.Errorf("stage CIM data %s: %w", id, err)
	}
	if w.small, err = w.newRegion(RegionSmallData); err != nil {
		return nil, fmt.Errorf("stage CIM data %s: %w", id, err)
	}
	return &Stager{w: w, base: base}, nil
}

// ID is the region-set ID the data is staged for.
func (s *Stager) ID() GUID { return s.w.id }

// Base is the global region index of the image's first region.
func (s *Stager) Base() int { return s.base }

// AddStream writes the next size bytes of r as one file or stream's data. A
// short read or an I/O error is sticky: the Stager refuses further streams
// and cannot be adopted.
func (s *Stager) AddStream(r io.Reader, size int64) (StagedStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return StagedStream{}, err
	}
	if size < 0 || size > maxOffset {
		return StagedStream{}, fmt.Errorf("stage stream: size %d outside [0, 2^48)", size)
	}
	var st stream
	s.w.startStream("staged stream", size, &st)
	_, err := io.CopyN(s.w, r, size)
	if err != nil && s.w.err == nil {
		s.w.err = fmt.Errorf("CIM data %s: staged stream: %w", s.w.name, err)
	}
	if ferr := s.w.finishStream(); err == nil {
		err = ferr
	}
	if err != nil {
		return StagedStream{}, err
	}
	return StagedStream{s: st, owner: s}, nil
}

func (s *Stager) usable() error {
	switch {
	case s.adopted:
		return errors.New("CIM data stager already adopted by a writer")
	case s.w.done:
		return errors.New("CIM data stager closed")
	}
	return s.w.err
}

// Close removes the staged files unless a Writer adopted them (the Writer
// then owns them). It is safe to call more than once.
func (s *Stager) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.adopted {
		return nil
	}
	return s.w.Close()
}

// WithStaged makes Create or CreateForked adopt the region files of s
// instead of starting empty ones; the Writer's ID defaults to s.ID(). The
// Writer refuses a Stager staged for another ID, base region index or
// version, or one that failed.
func WithStaged(s *Stager) WriterOption { return func(o *writerOptions) { o.staged = s } }

// adopt takes over the staged region files. It is the last step of
// newWriter: nothing after it can fail, so a refused or failed creation
// leaves the Stager intact.
func (w *Writer) adopt(s *Stager) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	sw := s.w
	switch {
	case sw.id != w.id:
		return fmt.Errorf("data staged for region set %s, not %s", sw.id, w.id)
	case s.base != w.base:
		return fmt.Errorf("data staged for regions from index %d, but this CIM's regions start at %d (parent chain of another depth?)", s.base, w.base)
	case sw.ver != w.ver:
		return fmt.Errorf("data staged as format %s, writer writes %s", sw.ver, w.ver)
	case sw.dir != w.dir:
		return fmt.Errorf("data staged in %s, not in %s", sw.dir, w.dir)
	}
	w.data, w.small = sw.data, sw.small
	w.tmpFiles = append(w.tmpFiles, sw.tmpFiles...)
	w.final = append(w.final, sw.final...)
	w.staged = s
	s.adopted = true
	sw.done = true
	return nil
}

func (w *Writer) checkStaged(what string, ss StagedStream) error {
	switch {
	case w.staged == nil:
		return fmt.Errorf("%s: this writer adopted no staged data", what)
	case ss.owner != w.staged:
		return fmt.Errorf("%s: stream staged by another Stager", what)
	}
	return nil
}

// AddFileStaged is AddFile for a file whose data ss was staged by the
// Stager this Writer adopted: no Write follows.
func (w *Writer) AddFileStaged(path string, info *FileInfo, ss StagedStream) error {
	if err := w.checkStaged("add "+path, ss); err != nil {
		return err
	}
	if info != nil && info.Attributes&AttrDirectory != 0 {
		return fmt.Errorf("add %s: a directory cannot have staged data", path)
	}
	n, err := w.addFile(path, info, 0)
	if err != nil {
		return err
	}
	n.data = ss.s
	return nil
}

// AddAlternateStreamStaged is AddAlternateStream for a stream whose data ss
// was staged by the Stager this Writer adopted: no Write follows.
func (w *Writer) AddAlternateStreamStaged(path, streamName string, ss StagedStream) error {
	if err := w.checkStaged("add stream "+path+":"+streamName, ss); err != nil {
		return err
	}
	if err := w.AddAlternateStream(path, streamName, 0); err != nil {
		return err
	}
	_, _, _, d, err := w.lookup(path)
	if err != nil || d == nil {
		return fmt.Errorf("add stream %s:%s: %w", path, streamName, fs.ErrNotExist)
	}
	key := foldKey(streamName, w.upcase)
	for _, a := range d.node.streams {
		if a.key == key {
			a.s = ss.s
			return nil
		}
	}
	return fmt.Errorf("add stream %s:%s: internal error: the stream just added is not found", path, streamName)
}
