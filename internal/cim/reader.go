package cim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode/utf16"
)

// maxDepth bounds directory recursion: a path of 0x7FFF UTF-16 units has at
// most this many components.
const maxDepth = maxPathUnits/2 + 1

// maxHeaderFile caps how much of a .cim file is read (72 bytes + 65535
// parent region sets of 24 bytes).
const maxHeaderFile = filesystemHeaderSize + 0xffff*regionSetSize

type regionFile struct {
	name string
	f    *os.File
	size uint64
	typ  uint8
}

// Image is an open CIM (with its parents' regions for a forked CIM). It is
// safe for concurrent reads.
type Image struct {
	path    string
	hdr     *filesystemHeader
	regions []regionFile
	upcase  []uint16
	ftdir   []ftDirEntry
	root    uint32

	maxSparse int64

	mu           sync.Mutex
	tables       map[int][]byte
	dirCache     map[stream]*linkTable
	dirCacheSize int
	sdCache      map[regionOffset][]byte
}

// DefaultMaxSparseSize is the largest sparse (all-zero) stream an Image
// serves unless WithMaxSparseSize says otherwise. A sparse stream costs no
// bytes on disk, so without a limit a corrupt 48-bit length would make
// readers (and View's hashing) run for days.
const DefaultMaxSparseSize = 64 << 30

// OpenOption configures Open.
type OpenOption func(*Image)

// WithMaxSparseSize sets the largest sparse stream the image will serve.
func WithMaxSparseSize(n int64) OpenOption { return func(im *Image) { im.maxSparse = n } }

// Open opens the .cim at path. Region files (its own and its parents') are
// looked up beside it and their headers validated.
func Open(path string, opts ...OpenOption) (_ *Image, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("open CIM %s: %w", path, err)
		}
	}()
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	hb, err := io.ReadAll(io.LimitReader(f, maxHeaderFile))
	f.Close()
	if err != nil {
		return nil, err
	}
	hdr, err := parseFilesystemHeader(hb)
	if err != nil {
		return nil, err
	}
	im := &Image{path: path, hdr: hdr, tables: map[int][]byte{}, maxSparse: DefaultMaxSparseSize}
	for _, o := range opts {
		o(im)
	}
	defer func() {
		if err != nil {
			im.Close()
		}
	}()
	total := int(hdr.Regions.Count)
	for _, p := range hdr.Parents {
		total += int(p.Count)
	}
	if hdr.Regions.Count == 0 || total > maxRegions {
		return nil, formatErr("region count %d (own %d) outside [1, %d]", total, hdr.Regions.Count, maxRegions)
	}
	dir := filepath.Dir(path)
	for _, rs := range append(append([]regionSet(nil), hdr.Parents...), hdr.Regions) {
		for i := 0; i < int(rs.Count); i++ {
			r, err := openRegion(filepath.Join(dir, fmt.Sprintf("region_%s_%d", rs.ID, i)), i)
			if err != nil {
				return nil, err
			}
			im.regions = append(im.regions, r)
		}
	}
	fsb, err := im.read(hdr.FilesystemOffset, 0, filesystemSize)
	if err != nil {
		return nil, fmt.Errorf("filesystem object: %w", err)
	}
	fsys := parseFilesystem(fsb)
	ub, err := im.read(fsys.Upcase, 0, 2*upcaseTableLength)
	if err != nil {
		return nil, fmt.Errorf("upcase table: %w", err)
	}
	im.upcase = make([]uint16, upcaseTableLength)
	for i := range im.upcase {
		im.upcase[i] = binary.LittleEndian.Uint16(ub[2*i:])
	}
	if fsys.FTDirCount == 0 {
		return nil, formatErr("empty file table directory")
	}
	db, err := im.read(fsys.FTDir, 0, uint64(fsys.FTDirCount)*ftDirEntrySize)
	if err != nil {
		return nil, fmt.Errorf("file table directory: %w", err)
	}
	for i := 0; i < int(fsys.FTDirCount); i++ {
		e := parseFTDirEntry(db[i*ftDirEntrySize:])
		if e.Count > filesPerTable || e.EntrySize == 0 {
			return nil, formatErr("file table %d: count %d, entry size %d", i, e.Count, e.EntrySize)
		}
		im.ftdir = append(im.ftdir, e)
	}
	im.root = fsys.Root
	rec, err := im.record(im.root)
	if err != nil {
		return nil, fmt.Errorf("root directory: %w", err)
	}
	if rec.DefaultStream.typ() != streamTypeLinkTable {
		return nil, formatErr("root FileID %d is not a directory", im.root)
	}
	return im, nil
}

func openRegion(p string, index int) (regionFile, error) {
	f, err := os.Open(p)
	if err != nil {
		return regionFile{}, fmt.Errorf("region file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return regionFile{}, err
	}
	b := make([]byte, regionHeaderSize)
	if _, err := io.ReadFull(f, b); err != nil {
		f.Close()
		return regionFile{}, fmt.Errorf("%w: region file %s: header: %v", ErrFormat, filepath.Base(p), err)
	}
	if _, err := parseCommonHeader(b, fileTypeRegion); err != nil {
		f.Close()
		return regionFile{}, fmt.Errorf("region file %s: %w", filepath.Base(p), err)
	}
	if got := int(binary.LittleEndian.Uint16(b[32:])); got != index {
		f.Close()
		return regionFile{}, formatErr("region file %s: index %d in header, want %d", filepath.Base(p), got, index)
	}
	return regionFile{name: filepath.Base(p), f: f, size: uint64(st.Size()), typ: b[34]}, nil
}

// Close releases the region files.
func (im *Image) Close() error {
	var errs []error
	for _, r := range im.regions {
		if r.f != nil {
			errs = append(errs, r.f.Close())
		}
	}
	im.regions = nil
	return errors.Join(errs...)
}

// locate validates that n bytes at o+extra lie inside a region file.
func (im *Image) locate(o regionOffset, extra, n uint64) (*regionFile, int64, error) {
	idx, off := o.index(), o.offset()
	if o == 0 || off == 0 {
		return nil, 0, formatErr("null object offset")
	}
	if idx >= len(im.regions) {
		return nil, 0, formatErr("object offset %#x: region %d of %d", uint64(o), idx, len(im.regions))
	}
	r := &im.regions[idx]
	if off > r.size || extra > r.size-off || n > r.size-off-extra {
		return nil, 0, formatErr("object offset %#x+%d, %d bytes: beyond region file %s (%d bytes)", uint64(o), extra, n, r.name, r.size)
	}
	return r, int64(off + extra), nil
}

// read returns n bytes at o+extra, validated against the region file size.
func (im *Image) read(o regionOffset, extra, n uint64) ([]byte, error) {
	r, off, err := im.locate(o, extra, n)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := r.f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("read %s at %d: %w", r.name, off, err)
	}
	return b, nil
}

// readCounted reads a u16 byte count followed by that many bytes (SDs, reparse data).
func (im *Image) readCounted(o regionOffset) ([]byte, error) {
	nb, err := im.read(o, 0, 2)
	if err != nil {
		return nil, err
	}
	return im.read(o, 2, uint64(binary.LittleEndian.Uint16(nb)))
}

// record returns the File entry of id.
func (im *Image) record(id uint32) (*fileRecord, error) {
	if id == 0 {
		return nil, formatErr("FileID 0")
	}
	t, slot := int((id-1)/filesPerTable), int((id-1)%filesPerTable)
	if t >= len(im.ftdir) || slot >= int(im.ftdir[t].Count) {
		return nil, formatErr("FileID %d out of range", id)
	}
	e := im.ftdir[t]
	im.mu.Lock()
	b, ok := im.tables[t]
	im.mu.Unlock()
	if !ok {
		var err error
		b, err = im.read(e.Offset, 0, uint64(e.Count)*uint64(e.EntrySize))
		if err != nil {
			return nil, fmt.Errorf("file table %d: %w", t, err)
		}
		im.mu.Lock()
		im.tables[t] = b
		im.mu.Unlock()
	}
	es := int(e.EntrySize)
	rec := parseFileRecord(b[slot*es : (slot+1)*es])
	switch rec.DefaultStream.typ() {
	case streamTypeData, streamTypeLinkTable, streamTypePeImage:
	default:
		return nil, formatErr("FileID %d: stream type %d", id, rec.DefaultStream.typ())
	}
	return &rec, nil
}

// eaFieldsError refuses a file record whose EaOffset and EaLength disagree.
// A file without EAs has both 0 (what this writer emits); an offset with
// length 0, or a length with offset 0, is not a valid file: the reader
// refuses it (instead of silently showing no EAs) and Fsck reports it.
// Whether CimFS accepts such a record is unknown (no Windows here).
func eaFieldsError(rec *fileRecord) error {
	switch {
	case rec.EA != 0 && rec.EaLength == 0:
		return formatErr("EaOffset %#x with EaLength 0 (a file without EAs has EaOffset 0)", uint64(rec.EA))
	case rec.EA == 0 && rec.EaLength != 0:
		return formatErr("EaLength %d with EaOffset 0", rec.EaLength)
	}
	return nil
}

// checkOrder refuses a link table whose names are not strictly ascending
// through the image's upcase table: CimFS finds names by binary search, so
// it (and cim cat, Stat and Open here) would miss entries that a plain
// listing shows. Fsck reports every such pair instead of stopping.
func (im *Image) checkOrder(what string, ents []linkEntry) error {
	var prev string
	for i, e := range ents {
		k := foldKey16(e.name, im.upcase)
		if i > 0 && k <= prev {
			rel := "sorted before"
			if k == prev {
				rel = "equal through the upcase table to"
			}
			return formatErr("%s: %q %s %q: entries out of the upcase table's order cannot all be found by name (converter cim verify lists every such pair)",
				what, string(utf16.Decode(ents[i-1].name)), rel, string(utf16.Decode(e.name)))
		}
		prev = k
	}
	return nil
}

// DirEntry is one entry of a directory's link table.
type DirEntry struct {
	Name   string
	FileID uint32
}

func (im *Image) dirEntries(rec *fileRecord) ([]linkEntry, error) {
	t, err := im.dirTable(rec)
	if err != nil || t == nil {
		return nil, err
	}
	return t.entries()
}

// dirTableCacheBytes bounds the raw directory tables kept for path lookups.
const dirTableCacheBytes = 64 << 20

// dirTable returns a directory's validated link table (nil when empty),
// cached by offset so repeated lookups under a big directory do not re-read it.
func (im *Image) dirTable(rec *fileRecord) (*linkTable, error) {
	s := rec.DefaultStream
	if s.typ() != streamTypeLinkTable {
		return nil, errNotDir
	}
	if s.size() == 0 {
		return nil, nil
	}
	im.mu.Lock()
	t, ok := im.dirCache[s]
	im.mu.Unlock()
	if ok {
		return t, nil
	}
	b, err := im.read(s.Offset, 0, uint64(s.size()))
	if err != nil {
		return nil, fmt.Errorf("directory link table: %w", err)
	}
	if t, err = newLinkTable(b, 4); err != nil {
		return nil, err
	}
	im.mu.Lock()
	if im.dirCacheSize+len(b) > dirTableCacheBytes {
		im.dirCache, im.dirCacheSize = nil, 0
	}
	if im.dirCache == nil {
		im.dirCache = map[stream]*linkTable{}
	}
	im.dirCache[s] = t
	im.dirCacheSize += len(b)
	im.mu.Unlock()
	return t, nil
}

// streamEntries reads a file's stream table. Both framings are accepted: a
// u32 byte count followed by the link table (what this writer emits), or the
// link table directly. They are told apart by the first two u32s: in the
// framed form the count equals the table's own Length; in the bare form they
// are Length and Count, and a valid table always has Count < Length.
func (im *Image) streamEntries(rec *fileRecord) ([]linkEntry, error) {
	if rec.StreamTable == 0 {
		return nil, nil
	}
	h, err := im.read(rec.StreamTable, 0, 8)
	if err != nil {
		return nil, fmt.Errorf("stream table: %w", err)
	}
	a, b := binary.LittleEndian.Uint32(h), binary.LittleEndian.Uint32(h[4:])
	var extra uint64
	if a == b {
		extra = 4
	}
	t, err := im.read(rec.StreamTable, extra, uint64(a))
	if err != nil {
		return nil, fmt.Errorf("stream table: %w", err)
	}
	return parseLinkTable(t, streamSize)
}

var (
	errNotDir = errors.New("not a directory")
	errIsDir  = errors.New("is a directory")
)

// lookup resolves a '/' or '\' separated path to a FileID by binary search
// through each directory's link table, as CimFS does.
func (im *Image) lookup(path string) (uint32, *fileRecord, error) {
	parts := strings.FieldsFunc(path, func(r rune) bool { return r == '/' || r == '\\' })
	if len(parts) > maxDepth {
		return 0, nil, fmt.Errorf("%s: too deep", path)
	}
	id := im.root
	rec, err := im.record(id)
	if err != nil {
		return 0, nil, err
	}
	for i, c := range parts {
		t, err := im.dirTable(rec)
		if err != nil {
			return 0, nil, fmt.Errorf("%s: %w", strings.Join(parts[:i], "/"), err)
		}
		if t == nil {
			return 0, nil, fmt.Errorf("%s: %w", path, fs.ErrNotExist)
		}
		key := foldKey(c, im.upcase)
		lo, hi := 0, t.count
		found := -1
		for lo < hi {
			m := lo + (hi-lo)/2
			name, err := t.name(m)
			if err != nil {
				return 0, nil, fmt.Errorf("%s: %w", strings.Join(parts[:i], "/"), err)
			}
			k := foldKey16(name, im.upcase)
			switch {
			case key < k:
				hi = m
			case key > k:
				lo = m + 1
			default:
				found, lo = m, hi
			}
		}
		if found < 0 {
			return 0, nil, fmt.Errorf("%s: %w", path, fs.ErrNotExist)
		}
		id = binary.LittleEndian.Uint32(t.entry(found))
		if rec, err = im.record(id); err != nil {
			return 0, nil, err
		}
	}
	return id, rec, nil
}

// Stat is the metadata of one file or directory in an Image.
type Stat struct {
	FileInfo          // Attributes include the derived 0x10 and 0x400 bits
	FileID     uint32 // hard links share it
	ParentID   uint32
	Size       int64 // default stream length (0 for directories)
	IsDir      bool
	Sparse     bool // default stream stored sparse (reads as zeros)
	ReparseTag uint32
}

func (im *Image) stat(id uint32, rec *fileRecord) (*Stat, error) {
	st := &Stat{
		FileInfo: FileInfo{
			Attributes:   attributesFromRecord(rec),
			CreationTime: rec.Times[0], LastWriteTime: rec.Times[1], ChangeTime: rec.Times[2], LastAccessTime: rec.Times[3],
		},
		FileID: id, ParentID: rec.ParentID, IsDir: rec.DefaultStream.typ() == streamTypeLinkTable,
		Sparse: rec.DefaultStream.sparse(), ReparseTag: rec.ReparseTag,
	}
	if !st.IsDir {
		st.Size = rec.DefaultStream.size()
	}
	var err error
	if rec.SD != 0 {
		if st.SecurityDescriptor, err = im.securityDescriptor(rec.SD); err != nil {
			return nil, fmt.Errorf("security descriptor: %w", err)
		}
	}
	if err := eaFieldsError(rec); err != nil {
		return nil, err
	}
	if rec.EA != 0 {
		if st.ExtendedAttributes, err = im.read(rec.EA, 0, uint64(rec.EaLength)); err != nil {
			return nil, fmt.Errorf("extended attributes: %w", err)
		}
	}
	if rec.Reparse != 0 {
		if st.ReparseData, err = im.readCounted(rec.Reparse); err != nil {
			return nil, fmt.Errorf("reparse data: %w", err)
		}
	}
	return st, nil
}

// securityDescriptor reads an SD; SDs are shared between files, so they are
// cached by offset (callers must not modify the returned bytes).
func (im *Image) securityDescriptor(o regionOffset) ([]byte, error) {
	im.mu.Lock()
	sd, ok := im.sdCache[o]
	im.mu.Unlock()
	if ok {
		return sd, nil
	}
	sd, err := im.readCounted(o)
	if err != nil {
		return nil, err
	}
	im.mu.Lock()
	if len(im.sdCache) > 1<<16 {
		im.sdCache = nil
	}
	if im.sdCache == nil {
		im.sdCache = map[regionOffset][]byte{}
	}
	im.sdCache[o] = sd
	im.mu.Unlock()
	return sd, nil
}

// Stat returns the metadata of path.
func (im *Image) Stat(path string) (*Stat, error) {
	id, rec, err := im.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("stat %w", err)
	}
	st, err := im.stat(id, rec)
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	return st, nil
}

// ReadDir lists a directory in link-table order.
func (im *Image) ReadDir(path string) ([]DirEntry, error) {
	_, rec, err := im.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("readdir %w", err)
	}
	ents, err := im.dirEntries(rec)
	if err == nil {
		err = im.checkOrder("directory", ents)
	}
	if err != nil {
		return nil, fmt.Errorf("readdir %s: %w", path, err)
	}
	out := make([]DirEntry, len(ents))
	for i, e := range ents {
		out[i] = DirEntry{Name: string(utf16.Decode(e.name)), FileID: binary.LittleEndian.Uint32(e.entry)}
	}
	return out, nil
}

// Open returns a reader of path's default data stream.
func (im *Image) Open(path string) (*io.SectionReader, error) {
	_, rec, err := im.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("open %w", err)
	}
	if rec.DefaultStream.typ() == streamTypeLinkTable {
		return nil, fmt.Errorf("open %s: %w", path, errIsDir)
	}
	r, err := im.streamReader(rec.DefaultStream)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return r, nil
}

// StreamInfo names one alternate data stream.
type StreamInfo struct {
	Name string
	Size int64
}

// Streams lists path's alternate data streams in stream-table order.
func (im *Image) Streams(path string) ([]StreamInfo, error) {
	_, rec, err := im.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("streams %w", err)
	}
	ents, err := im.streamEntries(rec)
	if err != nil {
		return nil, fmt.Errorf("streams %s: %w", path, err)
	}
	out := make([]StreamInfo, len(ents))
	for i, e := range ents {
		out[i] = StreamInfo{Name: string(utf16.Decode(e.name)), Size: parseStream(e.entry).size()}
	}
	return out, nil
}

// OpenStream returns a reader of path's alternate data stream name
// (compared case-insensitively).
func (im *Image) OpenStream(path, name string) (*io.SectionReader, error) {
	_, rec, err := im.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("open stream %w", err)
	}
	ents, err := im.streamEntries(rec)
	if err != nil {
		return nil, fmt.Errorf("open stream %s:%s: %w", path, name, err)
	}
	key := foldKey(name, im.upcase)
	for _, e := range ents {
		if foldKey16(e.name, im.upcase) == key {
			s := parseStream(e.entry)
			if s.typ() != streamTypeData {
				return nil, formatErr("stream %s:%s has type %d", path, name, s.typ())
			}
			r, err := im.streamReader(s)
			if err != nil {
				return nil, fmt.Errorf("open stream %s:%s: %w", path, name, err)
			}
			return r, nil
		}
	}
	return nil, fmt.Errorf("open stream %s:%s: %w", path, name, fs.ErrNotExist)
}

type zeroReaderAt struct{}

func (zeroReaderAt) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

func (im *Image) streamReader(s stream) (*io.SectionReader, error) {
	size := s.size()
	switch {
	case s.sparse():
		if size > im.maxSparse {
			return nil, formatErr("sparse stream of %d bytes exceeds the limit of %d", size, im.maxSparse)
		}
		return io.NewSectionReader(zeroReaderAt{}, 0, size), nil
	case size == 0:
		return io.NewSectionReader(zeroReaderAt{}, 0, 0), nil
	case s.typ() == streamTypePeImage:
		pe, err := im.peImage(s)
		if err != nil {
			return nil, err
		}
		return io.NewSectionReader(pe, 0, size), nil
	}
	r, off, err := im.locate(s.Offset, 0, uint64(size))
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(r.f, off, size), nil
}

// peImage (24 bytes) + mappings: DataOffset regionOffset @0, DataLength u64
// @8 (top bit masked), ImageLength u32 @16, MappingCount u16 @20, Flags u16
// @22, then MappingCount {FileOffset u32, Delta u32}. File byte x is read from
// DataOffset + x + Delta of the last mapping whose FileOffset <= x.
// Not produced by this writer; read support follows the public reader and is
// not validated against CimFS output.
type peReader struct {
	f        *os.File
	base     int64
	length   uint64
	mappings [][2]uint32
}

func (im *Image) peImage(s stream) (*peReader, error) {
	h, err := im.read(s.Offset, 0, 24)
	if err != nil {
		return nil, fmt.Errorf("PE image: %w", err)
	}
	dataOff := regionOffset(binary.LittleEndian.Uint64(h))
	length := binary.LittleEndian.Uint64(h[8:]) &^ (1 << 63)
	n := binary.LittleEndian.Uint16(h[20:])
	mb, err := im.read(s.Offset, 24, uint64(n)*8)
	if err != nil {
		return nil, fmt.Errorf("PE image mappings: %w", err)
	}
	p := &peReader{length: length}
	var maxDelta uint64
	for i := 0; i < int(n); i++ {
		m := [2]uint32{binary.LittleEndian.Uint32(mb[8*i:]), binary.LittleEndian.Uint32(mb[8*i+4:])}
		if i > 0 && m[0] < p.mappings[i-1][0] {
			return nil, formatErr("PE image mappings not sorted")
		}
		maxDelta = max(maxDelta, uint64(m[1]))
		p.mappings = append(p.mappings, m)
	}
	if uint64(s.size()) > length {
		return nil, formatErr("PE stream of %d bytes longer than its data (%d)", s.size(), length)
	}
	r, off, err := im.locate(dataOff, 0, length+maxDelta)
	if err != nil {
		return nil, fmt.Errorf("PE image data: %w", err)
	}
	p.f, p.base = r.f, off
	return p, nil
}

func (p *peReader) ReadAt(b []byte, off int64) (int, error) {
	n := 0
	for len(b) > 0 {
		x := uint64(off) + uint64(n)
		if x >= p.length {
			return n, io.EOF
		}
		var delta uint64
		end := p.length
		for _, m := range p.mappings {
			if uint64(m[0]) > x {
				end = uint64(m[0])
				break
			}
			delta = uint64(m[1])
		}
		k := min(uint64(len(b)), end-x)
		got, err := p.f.ReadAt(b[:k], p.base+int64(x+delta))
		n += got
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}

// WalkFunc is called for every path of the image (not the root), parents
// before children, in link-table order. path is '/'-separated, spelled as
// stored. Returning fs.SkipDir from a directory skips its children.
type WalkFunc func(path string, st *Stat) error

// Walk visits the whole tree. A directory reachable twice (a cycle or a
// directory hard link in a corrupt image) is an error.
func (im *Image) Walk(fn WalkFunc) error {
	rec, err := im.record(im.root)
	if err != nil {
		return err
	}
	visited := map[uint32]bool{im.root: true}
	return im.walk("", rec, 0, visited, func(p string, st *Stat, _ *fileRecord) error { return fn(p, st) })
}

type walkFunc func(path string, st *Stat, rec *fileRecord) error

func (im *Image) walk(dir string, rec *fileRecord, depth int, visited map[uint32]bool, fn walkFunc) error {
	if depth > maxDepth {
		return formatErr("%s: directories nested deeper than %d", dir, maxDepth)
	}
	ents, err := im.dirEntries(rec)
	if err == nil {
		err = im.checkOrder("directory", ents)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	for _, e := range ents {
		name := string(utf16.Decode(e.name))
		p := name
		if dir != "" {
			p = dir + "/" + name
		}
		id := binary.LittleEndian.Uint32(e.entry)
		crec, err := im.record(id)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		st, err := im.stat(id, crec)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		err = fn(p, st, crec)
		if st.IsDir {
			if errors.Is(err, fs.SkipDir) {
				continue
			}
			if err != nil {
				return err
			}
			if visited[id] {
				return formatErr("%s: directory FileID %d reached twice", p, id)
			}
			visited[id] = true
			if err := im.walk(p, crec, depth+1, visited, fn); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	return nil
}
