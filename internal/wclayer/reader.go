package wclayer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/cimconv/cimconv/internal/tarstream"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is told from a layer blob's first bytes, never from its media
// type (registries and tools mislabel layers).
var (
	magicGzip = []byte{0x1f, 0x8b}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// DetectCompression tells a layer blob's compression from its first bytes
// (four are enough): Gzip, Zstd, or Uncompressed for anything else.
func DetectCompression(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return Gzip
	case bytes.HasPrefix(head, magicZstd):
		return Zstd
	}
	return Uncompressed
}

// kind is what a path of the layer is, for validation of later entries.
type kind uint8

const (
	kindFile kind = iota + 1
	kindDir
	kindSymlink
)

// Reader reads one Windows layer tar in a single streaming pass. It is not
// safe for concurrent use. Memory is bounded by the layer's metadata (one
// set of paths for validation); file data is never buffered.
type Reader struct {
	o      options
	src    *sourceReader
	ra     *readahead
	zr     *zstd.Decoder
	out    *hashingReader
	tarSrc io.Reader              // what the tar reader reads: out, or a readahead over it
	sum    func() ([]byte, error) // the DiffID's hash, once the stream is read
	tr     *tarstream.Reader
	stats  Stats
	cur    *Entry
	last   string   // TarName of the previous entry, for errors between entries
	paths  pathTree // this layer's entries, for validation
	total  int64    // declared data bytes so far
	err    error    // sticky
	done   bool
	diffID string
}

// NewReader starts reading a layer blob: it detects an uncompressed, gzip or
// zstd stream by its magic bytes. Read it with Next (and Read) to io.EOF.
func NewReader(r io.Reader, opts ...Option) (*Reader, error) {
	lr := &Reader{}
	for _, opt := range opts {
		opt(&lr.o)
	}
	lr.o.limits = lr.o.limits.withDefaults()
	lr.src = &sourceReader{r: r}
	br := bufio.NewReaderSize(lr.src, 256<<10)
	magic, _ := br.Peek(4)
	var plain io.Reader = br
	switch DetectCompression(magic) {
	case Gzip:
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, lr.streamErr(err, "gzip header")
		}
		lr.ra = newReadahead(gz, 256<<10, 4, nil)
		plain, lr.stats.Compression = lr.ra, Gzip
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return nil, lr.streamErr(err, "zstd header")
		}
		lr.zr, plain, lr.stats.Compression = zr, zr, Zstd
	}
	h := sha256.New()
	lr.out = &hashingReader{r: plain, src: lr.src, limits: lr.o.limits}
	if lr.ra == nil && lr.zr == nil {
		// Uncompressed: read on a goroutine of their own and hash on
		// another, so that hashing overlaps with reading, with parsing
		// and with the caller's writes.
		lr.ra = newReadahead(lr.out, 256<<10, 4, h)
		lr.tarSrc, lr.sum = lr.ra, lr.ra.Sum
	} else {
		lr.out.h = h
		lr.tarSrc, lr.sum = lr.out, func() ([]byte, error) { return h.Sum(nil), nil }
	}
	lr.tr = tarstream.NewReader(lr.tarSrc)
	return lr, nil
}

// Next returns the next entry, or io.EOF after the last one. Before io.EOF
// it reads the stream to its end: the compression checksum is verified and
// the zero padding after the tar's end is hashed into the DiffID. Every
// problem with the layer is an *Error; after an error Next keeps returning it.
func (r *Reader) Next() (*Entry, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.done {
		return nil, io.EOF
	}
	r.cur = nil
	for {
		hdr, err := r.tr.Next()
		if err == io.EOF {
			if err := r.finish(); err != nil {
				return nil, r.fail(err)
			}
			return nil, io.EOF
		}
		if err != nil {
			where := "reading the first tar header"
			if r.last != "" {
				where = "reading the tar header after entry " + quote(r.last)
			}
			return nil, r.fail(r.streamErr(err, where))
		}
		e, pr := r.entry(hdr)
		if pr != nil {
			return nil, r.fail(r.errorf(hdr.Name, pr))
		}
		if e == nil {
			continue // PAX global header or the layer root
		}
		r.last = hdr.Name
		r.cur = e
		return e, nil
	}
}

// Read reads the data of the current file or stream entry.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.cur == nil || (r.cur.Type != TypeFile && r.cur.Type != TypeStream) {
		return 0, io.EOF
	}
	n, err := r.tr.Read(p)
	if err != nil && err != io.EOF {
		return n, r.fail(r.streamErr(err, "reading data of entry "+quote(r.cur.TarName)))
	}
	return n, err
}

// DiffID is "sha256:<hex>" of all uncompressed bytes, the padding after the
// tar's end included. It is known only after Next returned io.EOF.
func (r *Reader) DiffID() (string, error) {
	if !r.done {
		return "", errors.New("wclayer: DiffID is known only after Next returned io.EOF")
	}
	return r.diffID, nil
}

// Stats returns the counts so far.
func (r *Reader) Stats() Stats {
	s := r.stats
	s.BytesIn, s.BytesOut = r.src.n.Load(), r.out.count.Load()
	return s
}

// Close stops the decompression goroutines. Next calls it itself at io.EOF
// and on errors; callers that may stop earlier should defer it.
func (r *Reader) Close() error {
	if r.err == nil && !r.done {
		r.err = errClosed
	}
	if r.ra != nil {
		r.ra.Close()
	}
	if r.zr != nil {
		r.zr.Close()
		r.zr = nil
	}
	return nil
}

func (r *Reader) fail(err error) error {
	r.err = err
	r.Close()
	return err
}

// finish drains the stream after the tar's end marker: only zero padding may
// follow; reading to EOF makes gzip/zstd verify their checksums.
func (r *Reader) finish() error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.tarSrc.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return &Error{Layer: r.o.name, Problem: "non-zero data after the end of the tar archive", Err: ErrCorrupt}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return r.streamErr(err, "reading the padding after the tar archive")
		}
	}
	r.done = true
	r.cur = nil
	sum, err := r.sum()
	if err != nil {
		// A bug, not the layer's fault: not an *Error.
		return fmt.Errorf("layer %s: computing the DiffID: %w", r.o.name, err)
	}
	r.diffID = "sha256:" + hex.EncodeToString(sum)
	r.Close()
	return nil
}

// streamErr classifies a failure of the byte stream: a limit, an I/O error of
// the source (returned wrapped, not as *Error, so callers may retry) or a
// corrupt compressed/tar stream.
func (r *Reader) streamErr(err error, where string) error {
	if r.out != nil && r.out.limitErr != nil {
		problem := r.out.limitErr.Error()
		if r.cur == nil {
			problem = where + ": " + problem
		}
		return &Error{Layer: r.o.name, Entry: r.curName(), Problem: problem, Err: ErrLimit}
	}
	if srcErr := r.src.failure(); srcErr != nil {
		return fmt.Errorf("layer %s: %s: %w", r.o.name, where, srcErr)
	}
	problem := where + ": " + err.Error()
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		problem = where + ": truncated stream"
	}
	kind := ErrCorrupt
	if errors.Is(err, tar.ErrHeader) {
		kind = ErrBadRecord
	}
	return &Error{Layer: r.o.name, Problem: problem, Err: fmt.Errorf("%w: %w", kind, err)}
}

func (r *Reader) curName() string {
	if r.cur != nil {
		return r.cur.TarName
	}
	return ""
}

func (r *Reader) errorf(tarName string, pr *problem) error {
	return &Error{Layer: r.o.name, Entry: tarName, Problem: pr.msg, Err: pr.kind}
}

// entry validates one tar header and turns it into an Entry (nil to skip).
func (r *Reader) entry(hdr *tar.Header) (*Entry, *problem) {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil, nil
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	default:
		return nil, newProblem(ErrUnsupported, "tar entry type %q is not used by Windows layers", string(hdr.Typeflag))
	}
	isDir := hdr.Typeflag == tar.TypeDir
	if isDir {
		trimmed := strings.TrimRight(hdr.Name, "/")
		if trimmed == "" || trimmed == "." {
			return nil, nil // the layer root itself ("./"): nothing to create
		}
	}
	p, pr := cleanPath(hdr.Name, isDir)
	if pr != nil {
		return nil, pr
	}
	e := &Entry{TarName: hdr.Name, Path: p}
	dir, last := path.Split(p)

	// Whiteouts first, whatever their type flag, as hcsshim's importer does.
	if strings.HasPrefix(last, whiteoutPrefix) {
		if last == opaqueWhiteout {
			return nil, newProblem(ErrUnsupported, "opaque whiteout: Windows layers do not use them")
		}
		if strings.HasPrefix(last, whiteoutPrefix+whiteoutPrefix) {
			return nil, newProblem(ErrUnsupported, "special whiteout %q", last)
		}
		name := last[len(whiteoutPrefix):]
		if name == "" || name == "." || name == ".." || strings.IndexByte(name, ':') >= 0 {
			return nil, newProblem(ErrInvalidName, "whiteout of %q", name)
		}
		e.Type, e.Path = TypeWhiteout, dir+name
		if pr := checkLengths(e.Path, ""); pr != nil {
			return nil, pr
		}
		if pr := r.checkArea(e.Path, true); pr != nil {
			return nil, pr
		}
		if pr := r.checkParents(fold(e.Path)); pr != nil {
			return nil, pr
		}
		key := fold(e.Path)
		r.paths.set(key, kindGone)
		r.stats.Whiteouts++
		return e, nil
	}

	if isDir && strings.IndexByte(last, ':') >= 0 {
		return nil, newProblem(ErrInvalidName, "colon in directory name %q", last)
	}
	if !isDir {
		file, stream, isStream, pr := splitStream(last)
		if pr != nil {
			return nil, pr
		}
		if isStream {
			if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeGNUSparse {
				return nil, newProblem(ErrInvalidName, "alternate stream entry of tar type %q (want a regular file)", string(hdr.Typeflag))
			}
			e.Type, e.Path, e.StreamName = TypeStream, dir+file, stream
		}
	}
	if pr := checkLengths(e.Path, e.StreamName); pr != nil {
		return nil, pr
	}
	if e.Type == 0 {
		switch hdr.Typeflag {
		case tar.TypeDir:
			e.Type = TypeDir
		case tar.TypeSymlink:
			e.Type = TypeSymlink
		case tar.TypeLink:
			e.Type = TypeHardLink
		default:
			e.Type = TypeFile
		}
	}
	if pr := r.checkArea(e.Path, false); pr != nil {
		return nil, pr
	}
	key := fold(e.Path)
	if pr := r.checkParents(key); pr != nil {
		return nil, pr
	}
	if pr := r.decodeRecords(hdr, e); pr != nil {
		return nil, pr
	}

	switch e.Type {
	case TypeFile, TypeStream:
		e.Size = hdr.Size
		if e.Size > r.o.limits.MaxFileSize {
			return nil, newProblem(ErrLimit, "size %d exceeds the limit MaxFileSize=%d", e.Size, r.o.limits.MaxFileSize)
		}
		r.total += e.Size
		if r.total > r.o.limits.MaxTotalSize {
			return nil, newProblem(ErrLimit, "layer data exceeds the limit MaxTotalSize=%d", r.o.limits.MaxTotalSize)
		}
		r.stats.DataBytes += e.Size
	}

	switch e.Type {
	case TypeFile:
		r.paths.set(key, kindFile)
		r.stats.Files++
		if IsDeltaHive(e.Path) {
			r.stats.DeltaHives++
		}
	case TypeDir:
		r.paths.set(key, kindDir)
		r.stats.Dirs++
	case TypeSymlink:
		if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return nil, newProblem(ErrBadRecord, "symlink with an empty or NUL-containing target")
		}
		if !utf8Valid(hdr.Linkname) {
			return nil, newProblem(ErrBadRecord, "symlink target is not valid UTF-8")
		}
		e.Linkname = hdr.Linkname
		_, mount := hdr.PAXRecords[recMountPoint]
		rp, err := EncodeReparsePoint(hdr.Linkname, mount)
		if err != nil {
			return nil, err.(*problemError).p
		}
		e.ReparseData = rp
		r.paths.set(key, kindSymlink)
		r.stats.Symlinks++
	case TypeHardLink:
		target, pr := cleanPath(hdr.Linkname, false)
		if pr != nil {
			pr.msg = "hard link target " + quote(hdr.Linkname) + ": " + pr.msg
			return nil, pr
		}
		if strings.IndexByte(target, ':') >= 0 {
			return nil, newProblem(ErrInvalidName, "hard link target %q names a stream", hdr.Linkname)
		}
		if pr := checkLengths(target, ""); pr != nil {
			pr.msg = "hard link target " + quote(hdr.Linkname) + ": " + pr.msg
			return nil, pr
		}
		if pr := r.checkArea(target, false); pr != nil {
			pr.msg = "hard link target: " + pr.msg
			return nil, pr
		}
		tkey := fold(target)
		k, ok := r.paths.lookup(tkey)
		switch {
		case ok && k == kindDir:
			return nil, newProblem(ErrLinkTarget, "hard link target %q is a directory", hdr.Linkname)
		case !ok && !r.inParents(target, tkey):
			return nil, newProblem(ErrLinkTarget, "hard link target %q is neither earlier in the layer nor in a parent layer", hdr.Linkname)
		case !ok:
			k = kindFile
		}
		e.Linkname = target
		r.paths.set(key, k)
		r.stats.HardLinks++
	case TypeStream:
		if _, ok := r.paths.lookup(key); !ok && !r.inParents(e.Path, key) {
			return nil, newProblem(ErrOrphanStream, "alternate stream %q of %q, which is neither earlier in the layer nor in a parent layer", e.StreamName, e.Path)
		}
		r.stats.Streams++
	}
	return e, nil
}

// checkArea refuses top-level names outside Files/, Hives/ and UtilityVM/.
// The `layout` file and Hives/*_BASE links of a base layer's CIM are written
// by the importer, never carried in tars, so a top-level `layout` is refused
// like any other stray name; a whiteout of a whole area is refused too.
func (r *Reader) checkArea(p string, whiteout bool) *problem {
	if Area(p) == "" {
		top, _, _ := strings.Cut(p, "/")
		return newProblem(ErrArea, "top-level name %q is not one of Files, Hives, UtilityVM", top)
	}
	if whiteout && strings.IndexByte(p, '/') < 0 {
		return newProblem(ErrArea, "whiteout of the whole %s area", p)
	}
	return nil
}

// checkParents refuses an entry below a file or symlink of this layer.
func (r *Reader) checkParents(key string) *problem {
	if p, k := r.paths.badAncestor(key); k != 0 {
		what := "a file"
		if k == kindSymlink {
			what = "a symlink"
		}
		return newProblem(ErrNotDirectory, "parent %q is %s", p, what)
	}
	return nil
}

// inParents reports whether p exists below this layer and was not whited out
// by this layer (itself or an ancestor).
func (r *Reader) inParents(p, key string) bool {
	if r.o.isBase || r.o.parentLookup == nil || r.paths.goneAbove(key) {
		return false
	}
	return r.o.parentLookup(p)
}

// decodeRecords fills attributes, SD, EAs and times from the header.
func (r *Reader) decodeRecords(hdr *tar.Header, e *Entry) *problem {
	recs := hdr.PAXRecords
	if v, ok := recs[recFileAttributes]; ok {
		a, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return newProblem(ErrBadRecord, "%s %q is not a 32-bit decimal number", recFileAttributes, v)
		}
		e.Attributes = uint32(a)
	} else {
		switch e.Type {
		case TypeDir:
			e.Attributes = AttrDirectory
		case TypeFile, TypeSymlink:
			e.Attributes = AttrArchive
		}
	}
	switch e.Type {
	case TypeDir:
		e.Attributes = e.Attributes&^AttrReparsePoint | AttrDirectory
	case TypeSymlink:
		e.Attributes |= AttrReparsePoint
	case TypeFile:
		if e.Attributes&AttrDirectory != 0 {
			return newProblem(ErrBadRecord, "%s %d marks a regular file as a directory", recFileAttributes, e.Attributes)
		}
		e.Attributes &^= AttrReparsePoint
	default:
		e.Attributes &^= AttrReparsePoint
	}
	if _, ok := recs[recSDDL]; ok {
		return newProblem(ErrUnsupported, "%s (SDDL text) security descriptors: only %s is supported", recSDDL, recRawSD)
	}
	if _, ok := recs[recOldSDDL]; ok {
		return newProblem(ErrUnsupported, "%s (SDDL text) security descriptors: only %s is supported", recOldSDDL, recRawSD)
	}
	if v, ok := recs[recRawSD]; ok && v != "" {
		if len(v) > base64.StdEncoding.EncodedLen(maxSDSize) {
			return newProblem(ErrBadRecord, "%s of %d base64 characters exceeds 65535 bytes", recRawSD, len(v))
		}
		sd, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return newProblem(ErrBadRecord, "%s: bad base64: %v", recRawSD, err)
		}
		if msg := checkSD(sd); msg != "" {
			return newProblem(ErrBadRecord, "%s: %s", recRawSD, msg)
		}
		e.SecurityDescriptor = sd
	}
	ea, pr := encodeEAs(recs)
	if pr != nil {
		return pr
	}
	e.ExtendedAttributes = ea
	if v, ok := recs[recCreationTime]; ok {
		t, ok := parsePAXTime(v)
		if !ok {
			return newProblem(ErrBadRecord, "%s %q is not a PAX time (secs[.frac])", recCreationTime, v)
		}
		if e.CreationTime, ok = filetime(t); !ok {
			return newProblem(ErrBadRecord, "%s %q is outside the Windows time range", recCreationTime, v)
		}
	}
	var ok bool
	if e.LastWriteTime, ok = filetime(hdr.ModTime); !ok {
		return newProblem(ErrBadRecord, "modification time %v is outside the Windows time range", hdr.ModTime)
	}
	if e.ChangeTime, ok = filetime(hdr.ChangeTime); !ok {
		return newProblem(ErrBadRecord, "change time %v is outside the Windows time range", hdr.ChangeTime)
	}
	if e.LastAccessTime, ok = filetime(hdr.AccessTime); !ok {
		return newProblem(ErrBadRecord, "access time %v is outside the Windows time range", hdr.AccessTime)
	}
	return nil
}

// sourceReader counts compressed bytes and remembers the source's own error,
// so I/O failures are not mistaken for corrupt data. It may run on the
// readahead goroutine, hence the atomics.
type sourceReader struct {
	r   io.Reader
	n   atomic.Int64
	err atomic.Pointer[error]
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n.Add(int64(n))
	if err != nil && err != io.EOF {
		s.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (s *sourceReader) failure() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

// hashingReader hashes (unless a hashing readahead over it does) and counts
// the uncompressed stream and enforces the total-size and ratio limits on
// it.
type hashingReader struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	count    atomic.Int64 // n, for Stats while another goroutine reads
	src      *sourceReader
	limits   Limits
	limitErr error
}

func (h *hashingReader) Read(p []byte) (int, error) {
	if h.limitErr != nil {
		return 0, h.limitErr
	}
	n, err := h.r.Read(p)
	if n > 0 {
		if h.h != nil { // nil: a hashing readahead hashes what it reads
			h.h.Write(p[:n])
		}
		h.n += int64(n)
		h.count.Store(h.n)
		if h.n > h.limits.MaxTotalSize {
			h.limitErr = fmt.Errorf("uncompressed layer exceeds the limit MaxTotalSize=%d", h.limits.MaxTotalSize)
			// Deliver the bytes up to the first one over the limit only, so
			// that a reader running ahead (readahead) fails at the same
			// entry as one reading in step.
			over := h.n - h.limits.MaxTotalSize // bytes past the limit in p[:n]
			if keep := int64(n) - over + 1; keep > 0 && keep < int64(n) {
				n = int(keep)
			}
		} else if h.n > h.limits.RatioAfter && float64(h.n) > h.limits.MaxRatio*float64(h.src.n.Load()) {
			h.limitErr = fmt.Errorf("compression ratio %.0f exceeds the limit MaxRatio=%g", float64(h.n)/float64(max(h.src.n.Load(), 1)), h.limits.MaxRatio)
		}
		if h.limitErr != nil {
			return n, h.limitErr
		}
	}
	return n, err
}
