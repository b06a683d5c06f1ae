package cim

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// FileInfo is the metadata of a file or directory given to the Writer.
type FileInfo struct {
	Attributes                                              uint32 // FILE_ATTRIBUTE_*; 0x10 = directory
	CreationTime, LastWriteTime, ChangeTime, LastAccessTime int64  // FILETIME
	// SecurityDescriptor is self-relative. Nil or empty: the writer stores
	// NullSD, as hcsshim does (an image without SDs is not usable by CimFS).
	SecurityDescriptor []byte
	ExtendedAttributes []byte // FILE_FULL_EA_INFORMATION chain, <= 65535 bytes
	ReparseData        []byte // full REPARSE_DATA_BUFFER (symlinks, junctions); sets 0x400
}

// NullSD is the self-relative security descriptor with a NULL DACL
// (SDDL "D:NO_ACCESS_CONTROL") that replaces a missing SD: revision 1,
// control SE_SELF_RELATIVE|SE_DACL_PRESENT, no owner, group, SACL or DACL.
var NullSD = []byte{1, 0, 0x04, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// smallDataThreshold: streams shorter than this go to the 8-byte aligned
// small-data region, longer ones to the page-aligned data region (so a small
// file never costs a 4 KiB page).
const smallDataThreshold = pageSize

type writerOptions struct {
	id      *GUID
	version version
	staged  *Stager
}

// WriterOption configures Create and CreateForked.
type WriterOption func(*writerOptions)

// WithRegionSetID fixes the image's region-set GUID (default: random v4).
// With a fixed ID the output is byte-for-byte deterministic.
func WithRegionSetID(id GUID) WriterOption { return func(o *writerOptions) { o.id = &id } }

// WithVersion sets the format version written (default 3.0; 2.x writes
// 96-byte File entries). Only majors 2 and 3 are accepted.
func WithVersion(major, minor uint32) WriterOption {
	return func(o *writerOptions) { o.version = version{major, minor} }
}

// inode is one file or directory of the image being written. A hard link
// is a second dentry pointing to the same inode.
type inode struct {
	isDir    bool
	flags    uint16
	times    [4]int64
	sd       int32 // index in Writer.sds
	ea       []byte
	reparse  []byte
	data     stream // default data stream (files)
	streams  []*altStream
	children map[string]*dentry // dirs: fold key -> entry

	firstParent *inode

	// set by Commit
	id                  uint32
	parentID            uint32
	parentSeen          bool
	eaOff, rpOff, stOff regionOffset
	linkTable           stream
}

// plainDir reports whether n is a directory that is not a reparse point:
// the only kind whose children survive a replacement by a directory.
func (n *inode) plainDir() bool { return n.isDir && len(n.reparse) == 0 }

type dentry struct {
	name string
	node *inode
}

type altStream struct {
	name string
	key  string
	s    stream
}

// pendingStream is the stream whose bytes Write is currently receiving.
type pendingStream struct {
	path          string
	size, written int64
	region        *regionWriter
	allZero       bool
	off           int64
	target        *stream
}

// Writer builds one CIM. Calls mirror CimFS (CimCreateFile, CimWriteStream,
// CimCreateAlternateStream, CimCreateHardLink, CimDeletePath, CimCommitImage).
// It is not safe for concurrent use.
type Writer struct {
	dir, name string
	ver       version
	id        GUID
	parents   []regionSet // oldest ancestor first
	base      int         // region index of this image's first region
	upcase    []uint16

	root     *inode
	lastDir  dirCache
	scratch  []byte // ReadFrom's buffer before a stream's first data
	sds      [][]byte
	sdIndex  map[string]int32
	data     *regionWriter
	small    *regionWriter
	meta     *regionWriter // created by Commit
	cur      *pendingStream
	staged   *Stager // adopted with WithStaged
	tmpFiles []string
	final    []string
	done     bool
	err      error // sticky I/O error
}

// Create starts a new base CIM named name+".cim" in dir.
func Create(dir, name string, opts ...WriterOption) (*Writer, error) {
	return newWriter(dir, name, "", opts)
}

// CreateForked starts a CIM in dir forked from dir/parentName+".cim": its
// metadata starts as the parent's full tree (the parent may itself be forked),
// its header names the parents' region sets, and unchanged file data keeps
// pointing into the parents' regions.
func CreateForked(dir, name, parentName string, opts ...WriterOption) (*Writer, error) {
	if parentName == "" {
		return nil, fmt.Errorf("create forked CIM %s: empty parent name", name)
	}
	return newWriter(dir, name, parentName, opts)
}

func newWriter(dir, name, parentName string, opts []WriterOption) (_ *Writer, err error) {
	o := writerOptions{version: version{3, 0}}
	for _, f := range opts {
		f(&o)
	}
	if o.version.Major < 2 || o.version.Major > 3 {
		return nil, fmt.Errorf("create CIM %s: unsupported format version %s (2.x or 3.x)", name, o.version)
	}
	if name == "" || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("create CIM: invalid name %q", name)
	}
	cimPath := filepath.Join(dir, name+".cim")
	if _, err := os.Lstat(cimPath); err == nil {
		return nil, fmt.Errorf("create CIM %s: %w", cimPath, fs.ErrExist)
	}
	w := &Writer{dir: dir, name: name, ver: o.version, upcase: upcaseTable(), sdIndex: map[string]int32{}}
	if o.id != nil {
		w.id = *o.id
	} else if o.staged != nil {
		w.id = o.staged.ID()
	} else {
		if _, err := rand.Read(w.id[:]); err != nil {
			return nil, fmt.Errorf("create CIM %s: region set ID: %w", name, err)
		}
		w.id[7] = w.id[7]&0x0f | 0x40 // version 4 (Data3 high nibble)
		w.id[8] = w.id[8]&0x3f | 0x80 // RFC 4122 variant
	}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if parentName != "" {
		if err := w.loadParent(filepath.Join(dir, parentName+".cim")); err != nil {
			return nil, fmt.Errorf("create CIM %s forked from %s: %w", name, parentName, err)
		}
	} else {
		w.root = &inode{isDir: true, children: map[string]*dentry{}, sd: w.internSD(nil), flags: 0}
	}
	for _, p := range w.parents {
		if p.ID == w.id {
			return nil, fmt.Errorf("create CIM %s: region set ID %s already used by a parent", name, w.id)
		}
	}
	if w.base+3 > maxRegions {
		return nil, fmt.Errorf("create CIM %s: chain has %d regions, limit %d", name, w.base+3, maxRegions)
	}
	if o.staged != nil {
		// Last: a refused adoption leaves the Stager's files alone.
		if err := w.adopt(o.staged); err != nil {
			return nil, fmt.Errorf("create CIM %s: %w", name, err)
		}
		return w, nil
	}
	if w.data, err = w.newRegion(RegionData); err != nil {
		return nil, err
	}
	if w.small, err = w.newRegion(RegionSmallData); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) regionName(local int) string   { return fmt.Sprintf("region_%s_%d", w.id, local) }
func (w *Writer) objectIDName(local int) string { return fmt.Sprintf("objectid_%s_%d", w.id, local) }

// createTemp creates dir/.tmp-<final>; Commit renames it to <final>.
func (w *Writer) createTemp(final string) (*os.File, error) {
	p := filepath.Join(w.dir, ".tmp-"+final)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", p, err)
	}
	w.tmpFiles = append(w.tmpFiles, p)
	w.final = append(w.final, final)
	return f, nil
}

// regionWriter appends objects to one region file through a buffer.
type regionWriter struct {
	f     *os.File
	bw    *asyncWriter
	pos   int64
	index int // global region index
}

var zeroPage [pageSize]byte

func (w *Writer) newRegion(typ uint8) (*regionWriter, error) {
	local := int(typ)
	f, err := w.createTemp(w.regionName(local))
	if err != nil {
		return nil, err
	}
	r := &regionWriter{f: f, bw: newAsyncWriter(f, 1<<20, 4), index: w.base + local}
	if _, err := r.Write(marshalRegionHeader(w.ver, uint16(local), typ)); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *regionWriter) readFrom(src io.Reader, max int64) (int64, error) {
	n, err := r.bw.readFrom(src, max)
	r.pos += n
	return n, err
}

func (r *regionWriter) Write(p []byte) (int, error) {
	n, err := r.bw.Write(p)
	r.pos += int64(n)
	return n, err
}

// align pads with zeros to a multiple of a.
func (r *regionWriter) align(a int64) error {
	for pad := (a - r.pos%a) % a; pad > 0; {
		n := min(pad, int64(len(zeroPage)))
		if _, err := r.Write(zeroPage[:n]); err != nil {
			return err
		}
		pad -= n
	}
	return nil
}

// skip leaves n zero bytes as a hole instead of writing them (short runs
// are written: a hole costs a buffer flush and a seek).
func (r *regionWriter) skip(n int64) error {
	if n <= 64<<10 {
		for n > 0 {
			k := min(n, int64(len(zeroPage)))
			if _, err := r.Write(zeroPage[:k]); err != nil {
				return err
			}
			n -= k
		}
		return nil
	}
	if err := r.bw.Flush(); err != nil {
		return err
	}
	if _, err := r.f.Seek(n, io.SeekCurrent); err != nil {
		return err
	}
	r.pos += n
	return nil
}

// put writes an 8-byte aligned object and returns its offset.
func (r *regionWriter) put(b []byte) (regionOffset, error) {
	if err := r.align(8); err != nil {
		return 0, err
	}
	off := makeOffset(r.index, r.pos)
	_, err := r.Write(b)
	return off, err
}

func (r *regionWriter) finish() error {
	err := r.bw.Flush()
	r.bw.Close()
	if err != nil {
		return err
	}
	// A trailing hole (impossible today: skips precede data) would still need
	// the file length to cover it.
	if err := r.f.Truncate(r.pos); err != nil {
		return err
	}
	return r.f.Close()
}

func (w *Writer) internSD(sd []byte) int32 {
	if len(sd) == 0 {
		sd = NullSD
	}
	if i, ok := w.sdIndex[string(sd)]; ok {
		return i
	}
	i := int32(len(w.sds))
	w.sds = append(w.sds, append([]byte(nil), sd...))
	w.sdIndex[string(sd)] = i
	return i
}

// finishStream closes the stream being written, checking its length.
func (w *Writer) finishStream() error {
	c := w.cur
	if c == nil {
		return nil
	}
	w.cur = nil
	if c.written != c.size {
		// Sticky: committing would store a wrong stream.
		w.err = fmt.Errorf("CIM %s: %s: wrote %d of %d bytes", w.name, c.path, c.written, c.size)
		return w.err
	}
	switch {
	case c.size == 0:
		*c.target = makeStream(0, 0, streamTypeData, false)
	case c.allZero:
		*c.target = makeStream(0, c.size, streamTypeData, true)
	default:
		*c.target = makeStream(makeOffset(c.region.index, c.off), c.size, streamTypeData, false)
	}
	return nil
}

// errDone is what every call on a committed or closed Writer returns.
var errDone = errors.New("CIM writer already committed or closed")

// begin prepares every mutating call: it closes the current stream and
// refuses to go on after an I/O error or Commit.
func (w *Writer) begin() error {
	if w.done {
		return errDone
	}
	if w.err != nil {
		return w.err
	}
	return w.finishStream()
}

func (w *Writer) startStream(path string, size int64, target *stream) {
	*target = makeStream(0, 0, streamTypeData, false)
	if size == 0 {
		return
	}
	r := w.data
	if size < smallDataThreshold {
		r = w.small
	}
	w.cur = &pendingStream{path: path, size: size, region: r, allZero: true, target: target}
}

// Write appends data to the current file or stream. Streams that turn out to
// be all zeros are stored sparse, without writing the zeros.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		// Close stopped the region writers (a stream may still be open).
		return 0, errDone
	}
	if w.err != nil {
		return 0, w.err
	}
	c := w.cur
	if c == nil {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, errors.New("CIM write: no file or stream open for data")
	}
	if int64(len(p)) > c.size-c.written {
		w.err = fmt.Errorf("CIM %s: %s: write of %d bytes past declared size %d (at %d)", w.name, c.path, len(p), c.size, c.written)
		return 0, w.err
	}
	if c.allZero {
		i := firstNonZero(p)
		if i < 0 {
			c.written += int64(len(p))
			return len(p), nil
		}
		// First data: place the stream, then leave the zeros so far as a hole.
		a := int64(8)
		if c.region == w.data {
			a = pageSize
		}
		if err := c.region.align(a); err != nil {
			return 0, w.fail(err)
		}
		c.off = c.region.pos
		c.allZero = false
		if err := c.region.skip(c.written + int64(i)); err != nil {
			return 0, w.fail(err)
		}
		c.written += int64(i)
		p = p[i:]
		n, err := c.region.Write(p)
		c.written += int64(n)
		return i + n, w.fail(err)
	}
	n, err := c.region.Write(p)
	c.written += int64(n)
	return n, w.fail(err)
}

// ReadFrom reads the open file's or stream's data from r until r ends (what
// io.Copy and io.CopyN call): once the stream has begun, straight into the
// data region's write buffers, a copy less than Write's. The declared size
// is enforced as by Write.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.done {
		return 0, errDone
	}
	var total int64
	for {
		if w.err != nil {
			return total, w.err
		}
		c := w.cur
		if c == nil || c.allZero || c.written == c.size {
			// Not begun (zeros may still become a hole), nothing open, or
			// full (any further byte is an error): Write's path decides.
			if w.scratch == nil {
				w.scratch = make([]byte, 32<<10)
			}
			buf := w.scratch
			if c != nil && c.allZero && c.written == 0 {
				// A stream's first bytes decide whether it begins; most
				// begin at once, and the rest of them then goes straight
				// into the region's buffers instead of through scratch.
				buf = buf[:firstPiece]
			}
			n, err := r.Read(buf)
			if n > 0 {
				m, werr := w.Write(buf[:n])
				total += int64(m)
				if werr != nil {
					return total, werr
				}
			}
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
			continue
		}
		n, err := c.region.readFrom(r, c.size-c.written)
		c.written += n
		total += n
		if err != nil {
			return total, w.fail(err)
		}
		if c.written < c.size {
			return total, nil // r ended before the declared size
		}
	}
}

// firstPiece is how much of a stream ReadFrom reads through scratch before
// it knows whether the stream begins with data (files average tens of KiB in
// a Windows layer: reading 32 KiB there would copy most of them twice).
const firstPiece = 512

func (w *Writer) fail(err error) error {
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("CIM %s: %w", w.name, err)
	}
	if err != nil {
		return w.err
	}
	return nil
}

func firstNonZero(p []byte) int {
	i := 0
	for ; i+8 <= len(p); i += 8 {
		if binary.LittleEndian.Uint64(p[i:]) != 0 {
			break
		}
	}
	for ; i < len(p); i++ {
		if p[i] != 0 {
			return i
		}
	}
	return -1
}

// dirCache is the directory of the last lookup, by the exact spelling of
// its path: a layer lists a directory's entries together, so most lookups
// resolve the same parent, and a build adds every entry once. It is dropped
// whenever a directory may leave the tree (Unlink, AddLink, a directory
// replaced by a file).
type dirCache struct {
	path string // as given, without the last separator
	dir  *inode
}

// lookup resolves a path to its parent directory and entry (nil if absent).
func (w *Writer) lookup(path string) (parent *inode, key, name string, d *dentry, err error) {
	if dir, name, ok := w.cachedParent(path); ok {
		key = foldKey(name, w.upcase)
		return dir, key, name, dir.children[key], nil
	}
	parts, err := splitPath(path)
	if err != nil {
		return nil, "", "", nil, err
	}
	if len(parts) == 0 {
		return nil, "", "", &dentry{node: w.root}, nil
	}
	dir := w.root
	for i, c := range parts[:len(parts)-1] {
		e := dir.children[foldKey(c, w.upcase)]
		if e == nil {
			return nil, "", "", nil, fmt.Errorf("%s: parent %s: %w", path, strings.Join(parts[:i+1], "/"), fs.ErrNotExist)
		}
		if !e.node.isDir {
			return nil, "", "", nil, fmt.Errorf("%s: parent %s is not a directory", path, strings.Join(parts[:i+1], "/"))
		}
		dir = e.node
	}
	name = parts[len(parts)-1]
	if len(parts) > 1 {
		if i := strings.LastIndexAny(path, `/\`); i > 0 && path[i+1:] == name {
			w.lastDir = dirCache{path: path[:i], dir: dir}
		}
	}
	key = foldKey(name, w.upcase)
	return dir, key, name, dir.children[key], nil
}

// cachedParent answers lookup from lastDir when path is a valid name in
// that directory, spelt as it was.
func (w *Writer) cachedParent(path string) (dir *inode, name string, ok bool) {
	c := w.lastDir
	if c.dir == nil || len(path) <= len(c.path)+1 || path[:len(c.path)] != c.path {
		return nil, "", false
	}
	if sep := path[len(c.path)]; sep != '/' && sep != '\\' {
		return nil, "", false
	}
	name = path[len(c.path)+1:]
	if strings.ContainsAny(name, `/\`) || checkName(name) != nil ||
		len(path) > maxPathUnits && utf16Len(path) > maxPathUnits {
		return nil, "", false // the full walk says what is wrong
	}
	return c.dir, name, true
}

func checkInfo(info *FileInfo, size int64) error {
	switch {
	case info == nil:
		return errors.New("nil FileInfo")
	case size < 0 || size > maxOffset:
		return fmt.Errorf("size %d outside [0, 2^48)", size)
	case info.Attributes&AttrDirectory != 0 && size != 0:
		return fmt.Errorf("directory with data size %d", size)
	case len(info.SecurityDescriptor) > 0xffff:
		return fmt.Errorf("security descriptor of %d bytes (max 65535)", len(info.SecurityDescriptor))
	case len(info.ExtendedAttributes) > 0xffff:
		return fmt.Errorf("extended attributes of %d bytes (max 65535)", len(info.ExtendedAttributes))
	case len(info.ReparseData) > 0xffff:
		return fmt.Errorf("reparse data of %d bytes (max 65535)", len(info.ReparseData))
	case len(info.ReparseData) > 0 && len(info.ReparseData) < 8:
		return fmt.Errorf("reparse data of %d bytes is shorter than its 8-byte header", len(info.ReparseData))
	}
	return nil
}

// AddFile creates path, or replaces what is there (names compare
// case-insensitively; the new spelling wins). Replacing a plain directory
// with a plain directory keeps its children (a layer re-lists the
// directories it changes) but replaces its metadata and drops its alternate
// streams; any other replacement removes the old entry (and a directory's
// subtree) first. A reparse point with the directory attribute (a junction,
// a directory symlink) is not a plain directory: it replaces a directory's
// subtree, and a directory replacing it starts empty, as the layers' merged
// view (wclayer.MergeView) has it. Other hard links to a replaced file keep
// the old file. The parent directory must exist. A file's size bytes must
// then be written with Write.
func (w *Writer) AddFile(path string, info *FileInfo, size int64) error {
	_, err := w.addFile(path, info, size)
	return err
}

// addFile is AddFile returning the file's inode.
func (w *Writer) addFile(path string, info *FileInfo, size int64) (*inode, error) {
	if err := w.begin(); err != nil {
		return nil, err
	}
	if err := checkInfo(info, size); err != nil {
		return nil, fmt.Errorf("add %s: %w", path, err)
	}
	parent, key, name, old, err := w.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("add %w", err)
	}
	isDir := info.Attributes&AttrDirectory != 0
	if parent == nil { // the root
		if !isDir {
			return nil, fmt.Errorf("add %q: the root must be a directory", path)
		}
		w.setMeta(w.root, info)
		w.root.streams = nil
		return w.root, nil
	}
	var n *inode
	if old != nil && old.node.plainDir() && isDir && len(info.ReparseData) == 0 {
		n = old.node
		n.streams = nil
	} else {
		if old != nil && old.node.isDir {
			w.lastDir = dirCache{} // a directory leaves the tree
		}
		n = &inode{isDir: isDir, firstParent: parent}
		if isDir {
			n.children = map[string]*dentry{}
		}
	}
	w.setMeta(n, info)
	parent.children[key] = &dentry{name: name, node: n}
	if !isDir {
		w.startStream(path, size, &n.data)
	}
	return n, nil
}

func (w *Writer) setMeta(n *inode, info *FileInfo) {
	n.flags = flagsFromAttributes(info.Attributes)
	n.times = [4]int64{info.CreationTime, info.LastWriteTime, info.ChangeTime, info.LastAccessTime}
	n.sd = w.internSD(info.SecurityDescriptor)
	n.ea = cloneOrNil(info.ExtendedAttributes)
	n.reparse = cloneOrNil(info.ReparseData)
}

func cloneOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// AddAlternateStream adds (or replaces) the named data stream of an existing
// file or directory; size bytes must then be written with Write.
func (w *Writer) AddAlternateStream(path, streamName string, size int64) error {
	if err := w.begin(); err != nil {
		return err
	}
	if err := checkName(streamName); err != nil || strings.ContainsAny(streamName, `:/\`) {
		return fmt.Errorf("add stream %s:%s: invalid stream name", path, streamName)
	}
	if size < 0 || size > maxOffset {
		return fmt.Errorf("add stream %s:%s: size %d outside [0, 2^48)", path, streamName, size)
	}
	_, _, _, d, err := w.lookup(path)
	if err != nil {
		return fmt.Errorf("add stream %w", err)
	}
	if d == nil {
		return fmt.Errorf("add stream %s:%s: %w", path, streamName, fs.ErrNotExist)
	}
	n := d.node
	key := foldKey(streamName, w.upcase)
	var s *altStream
	for _, e := range n.streams {
		if e.key == key {
			s = e
			s.name = streamName
		}
	}
	if s == nil {
		s = &altStream{name: streamName, key: key}
		n.streams = append(n.streams, s)
	}
	w.startStream(path+":"+streamName, size, &s.s)
	return nil
}

// AddLink makes newPath a second directory entry of oldPath's file (a hard
// link). oldPath may come from a parent CIM. Directories cannot be linked.
func (w *Writer) AddLink(oldPath, newPath string) error {
	if err := w.begin(); err != nil {
		return err
	}
	_, _, _, src, err := w.lookup(oldPath)
	if err != nil {
		return fmt.Errorf("link %s -> %w", newPath, err)
	}
	if src == nil {
		return fmt.Errorf("link %s -> %s: target %w", newPath, oldPath, fs.ErrNotExist)
	}
	if src.node.isDir {
		return fmt.Errorf("link %s -> %s: target is a directory", newPath, oldPath)
	}
	parent, key, name, _, err := w.lookup(newPath)
	if err != nil {
		return fmt.Errorf("link %w", err)
	}
	if parent == nil {
		return fmt.Errorf("link %q: cannot replace the root", newPath)
	}
	w.lastDir = dirCache{} // newPath may have been a directory
	parent.children[key] = &dentry{name: name, node: src.node}
	return nil
}

// Unlink removes path (a directory with its subtree). It returns an error
// wrapping fs.ErrNotExist if the path is absent.
func (w *Writer) Unlink(path string) error {
	if err := w.begin(); err != nil {
		return err
	}
	parent, key, _, d, err := w.lookup(path)
	if err != nil {
		return fmt.Errorf("unlink %w", err)
	}
	if parent == nil && d != nil {
		return fmt.Errorf("unlink %q: cannot remove the root", path)
	}
	if d == nil {
		return fmt.Errorf("unlink %s: %w", path, fs.ErrNotExist)
	}
	w.lastDir = dirCache{}
	delete(parent.children, key)
	return nil
}

// Stat reports whether path exists (case-insensitively) and is a directory.
func (w *Writer) Stat(path string) (exists bool, isDir bool) {
	_, _, _, d, err := w.lookup(path)
	if err != nil || d == nil {
		return false, false
	}
	return true, d.node.isDir
}

// Files returns this CIM's own file names in its directory, sorted. It is
// complete after Commit.
func (w *Writer) Files() []string {
	out := append([]string(nil), w.final...)
	sort.Strings(out)
	return out
}

// Close abandons an uncommitted CIM and removes every file it wrote. After
// Commit it does nothing. Every call after Close or Commit (Write and
// ReadFrom included, even with a stream left open) returns an error.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	for _, r := range []*regionWriter{w.data, w.small, w.meta} {
		if r != nil {
			r.bw.Close()
			r.f.Close() // already closed after a partial Commit: error ignored
		}
	}
	var errs []error
	for _, p := range w.tmpFiles {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	w.final = nil
	return errors.Join(errs...)
}

// Commit writes the metadata region, the .cim file and the objectid files,
// then renames everything from temporary names into place (the .cim last) and
// closes the writer. On error nothing is left behind.
func (w *Writer) Commit() (err error) {
	if w.done {
		return errDone
	}
	defer func() {
		if err != nil {
			w.Close()
			err = fmt.Errorf("commit CIM %s: %w", w.name, err)
		}
	}()
	if err := w.begin(); err != nil {
		return err
	}
	meta, err := w.newRegion(RegionMetadata)
	if err != nil {
		return err
	}
	w.meta = meta
	fsOff, err := w.writeMetadata(meta)
	if err != nil {
		return err
	}
	for _, r := range []*regionWriter{meta, w.data, w.small} {
		if err := r.finish(); err != nil {
			return err
		}
	}
	for i, typ := range []uint8{RegionMetadata, RegionData, RegionSmallData} {
		f, err := w.createTemp(w.objectIDName(i))
		if err != nil {
			return err
		}
		_, err = f.Write(marshalObjectIDHeader(w.ver, uint16(i), typ))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	h := filesystemHeader{
		Common:           commonHeader{HeaderLength: filesystemHeaderSize, Type: fileTypeImage, Version: w.ver},
		Regions:          regionSet{ID: w.id, Count: 3},
		FilesystemOffset: fsOff,
		Parents:          w.parents,
	}
	f, err := w.createTemp(w.name + ".cim")
	if err != nil {
		return err
	}
	_, err = f.Write(h.marshal())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// tmpFiles[i] becomes final[i]; the .cim is last, so a crash leaves no
	// .cim naming missing regions.
	for i, p := range w.tmpFiles {
		if err := os.Rename(p, filepath.Join(w.dir, w.final[i])); err != nil {
			return err
		}
	}
	w.tmpFiles = nil
	w.done = true
	return nil
}

// writeMetadata lays out the metadata region:
//
//	header | upcase table | per directory, breadth first: each new child's SD
//	(first use), EA, reparse data and stream table, then the directory's link
//	table | file tables | file table directory | Filesystem object
//
// FileIDs are assigned breadth first in link-table order (root = 1), so a
// directory's children all have IDs when its link table is written.
func (w *Writer) writeMetadata(m *regionWriter) (regionOffset, error) {
	up := make([]byte, 2*upcaseTableLength)
	for i, u := range w.upcase {
		binary.LittleEndian.PutUint16(up[2*i:], u)
	}
	upOff, err := m.put(up)
	if err != nil {
		return 0, err
	}
	sdOff := make([]regionOffset, len(w.sds))
	var nodes []*inode
	assign := func(n *inode, parent *inode) error {
		if n.id != 0 {
			if !n.parentSeen && n.firstParent == parent {
				n.parentID, n.parentSeen = parent.id, true
			}
			return nil
		}
		nodes = append(nodes, n)
		n.id = uint32(len(nodes))
		if parent != nil {
			n.parentID = parent.id
			n.parentSeen = n.firstParent == parent
		}
		return w.writeObjects(m, n, sdOff)
	}
	// reset IDs (a forked writer's inodes are fresh, but be explicit)
	if err := assign(w.root, nil); err != nil {
		return 0, err
	}
	for q := 0; q < len(nodes); q++ {
		d := nodes[q]
		if !d.isDir {
			continue
		}
		keys := make([]string, 0, len(d.children))
		for k := range d.children {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		entries := make([]linkEntry, len(keys))
		for i, k := range keys {
			c := d.children[k]
			if err := assign(c.node, d); err != nil {
				return 0, err
			}
			var id [4]byte
			binary.LittleEndian.PutUint32(id[:], c.node.id)
			entries[i] = linkEntry{name: toUTF16(c.name), entry: id[:]}
		}
		lt := marshalLinkTable(entries, 4)
		off, err := m.put(lt)
		if err != nil {
			return 0, err
		}
		d.linkTable = makeStream(off, int64(len(lt)), streamTypeLinkTable, false)
	}
	if len(nodes) > 0xffffffff-1 {
		return 0, fmt.Errorf("%d files exceed the FileID space", len(nodes))
	}
	es := w.ver.fileSize()
	var dir []ftDirEntry
	for start := 0; start < len(nodes); start += filesPerTable {
		chunk := nodes[start:min(start+filesPerTable, len(nodes))]
		b := make([]byte, es*len(chunk))
		for i, n := range chunk {
			rec := fileRecord{
				Flags:       n.flags,
				EaLength:    uint16(len(n.ea)),
				Times:       n.times,
				SD:          sdOff[n.sd],
				EA:          n.eaOff,
				Reparse:     n.rpOff,
				StreamTable: n.stOff,
				ParentID:    n.parentID,
			}
			if len(n.reparse) >= 4 {
				rec.ReparseTag = binary.LittleEndian.Uint32(n.reparse)
			}
			if n.isDir {
				rec.DefaultStream = n.linkTable
			} else {
				rec.DefaultStream = n.data
			}
			rec.put(b[i*es:])
		}
		off, err := m.put(b)
		if err != nil {
			return 0, err
		}
		dir = append(dir, ftDirEntry{Offset: off, Count: uint16(len(chunk)), EntrySize: uint16(es)})
	}
	db := make([]byte, ftDirEntrySize*len(dir))
	for i, e := range dir {
		e.put(db[i*ftDirEntrySize:])
	}
	dirOff, err := m.put(db)
	if err != nil {
		return 0, err
	}
	return m.put(filesystem{Upcase: upOff, FTDir: dirOff, FTDirCount: uint32(len(dir)), Root: w.root.id}.marshal())
}

// writeObjects writes a file's variable-size metadata objects.
func (w *Writer) writeObjects(m *regionWriter, n *inode, sdOff []regionOffset) error {
	var err error
	if sdOff[n.sd] == 0 {
		sd := w.sds[n.sd]
		b := make([]byte, 2+len(sd))
		binary.LittleEndian.PutUint16(b, uint16(len(sd)))
		copy(b[2:], sd)
		if sdOff[n.sd], err = m.put(b); err != nil {
			return err
		}
	}
	if len(n.ea) > 0 {
		if n.eaOff, err = m.put(n.ea); err != nil {
			return err
		}
	}
	if len(n.reparse) > 0 {
		b := make([]byte, 2+len(n.reparse))
		binary.LittleEndian.PutUint16(b, uint16(len(n.reparse)))
		copy(b[2:], n.reparse)
		if n.rpOff, err = m.put(b); err != nil {
			return err
		}
	}
	if len(n.streams) > 0 {
		sort.Slice(n.streams, func(i, j int) bool { return n.streams[i].key < n.streams[j].key })
		entries := make([]linkEntry, len(n.streams))
		for i, s := range n.streams {
			var e [streamSize]byte
			s.s.put(e[:])
			entries[i] = linkEntry{name: toUTF16(s.name), entry: e[:]}
		}
		lt := marshalLinkTable(entries, streamSize)
		// Stream tables are framed with a u32 byte count before the link
		// table, as both public readers (jstarks and ambarve hcsshim,
		// getStreamTable) expect; see docs/cim-format.md. The count is placed
		// at 4 mod 8 so that the link table itself stays 8-byte aligned.
		b := make([]byte, 4+len(lt))
		binary.LittleEndian.PutUint32(b, uint32(len(lt)))
		copy(b[4:], lt)
		if err := m.align(8); err != nil {
			return err
		}
		if _, err := m.Write(zeroPage[:4]); err != nil {
			return err
		}
		n.stOff = makeOffset(m.index, m.pos)
		if _, err := m.Write(b); err != nil {
			return err
		}
	}
	return nil
}
