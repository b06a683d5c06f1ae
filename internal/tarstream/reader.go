package tarstream

import (
	"archive/tar"
	"bytes"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	blockSize = 512
	// maxPAXSize is archive/tar's limit on the data of a PAX header; a
	// larger one is handed over, and archive/tar refuses it.
	maxPAXSize = 1 << 20
	// sparsePrefix starts the PAX keys of GNU sparse files, which are
	// handed over.
	sparsePrefix = "GNU.sparse."
)

// Offsets of the USTAR header fields used here.
const (
	offName     = 0
	offMode     = 100
	offUID      = 108
	offGID      = 116
	offSize     = 124
	offMtime    = 136
	offChksum   = 148
	offType     = 156
	offLinkname = 157
	offMagic    = 257
	offDevmajor = 329
	offDevminor = 337
	offPrefix   = 345
	offTrailer  = 508
)

// Reader reads a tar archive in one pass: Next advances to each entry and
// Read reads the entry's data. It is not safe for concurrent use.
type Reader struct {
	src    io.Reader
	blk    [blockSize]byte
	hdr    tar.Header
	pax    map[string]string
	remain int64       // data bytes of the current entry not yet read
	pad    int64       // zero padding after them
	replay []byte      // for a hand-over: the entry's latest PAX header, then the block being parsed
	fb     *tar.Reader // archive/tar, once the stream is handed over
	err    error       // sticky
}

// NewReader returns a Reader reading the archive from r. It reads no more of
// r than archive/tar would: after Next returns io.EOF, r is positioned just
// past the archive's end marker.
func NewReader(r io.Reader) *Reader {
	return &Reader{src: r, pax: make(map[string]string)}
}

// Next advances to the next entry and returns its header, or io.EOF after
// the last one. Unread data of the previous entry is skipped.
//
// The Header and its PAXRecords map are reused: they are valid until the
// next call of Next. Its Typeflag, Name, Linkname, Size, Mode, Uid, Gid,
// ModTime, AccessTime, ChangeTime and PAXRecords are those archive/tar
// returns; other fields may be left zero.
func (r *Reader) Next() (*tar.Header, error) {
	if r.fb != nil {
		return r.fb.Next()
	}
	if r.err != nil {
		return nil, r.err
	}
	hdr, err := r.next()
	if err != nil && r.fb == nil {
		r.err = err
	}
	return hdr, err
}

// Read reads the current entry's data; it returns io.EOF at its end.
func (r *Reader) Read(p []byte) (int, error) {
	if r.fb != nil {
		return r.fb.Read(p)
	}
	if r.err != nil {
		return 0, r.err
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	var n int
	var err error
	if len(p) > 0 {
		n, err = r.src.Read(p)
		r.remain -= int64(n)
	}
	switch {
	case err == io.EOF && r.remain > 0:
		err = io.ErrUnexpectedEOF
	case err == nil && r.remain == 0:
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

func (r *Reader) next() (*tar.Header, error) {
	if err := r.skip(); err != nil {
		return nil, err
	}
	r.replay = r.replay[:0]
	havePAX := false
	for {
		if _, err := io.ReadFull(r.src, r.blk[:]); err != nil {
			return nil, err
		}
		if r.blk == [blockSize]byte{} {
			return nil, r.end()
		}
		num, ok := r.simpleBlock()
		typ := r.blk[offType]
		if ok && typ == tar.TypeXHeader {
			// archive/tar applies only the latest 'x' header before an
			// entry (each replaces the records of those before it), so a
			// hand-over needs only that one: the replay holds one PAX
			// header (at most maxPAXSize of data) and a block, however
			// many headers a hostile tar puts before an entry.
			r.replay = r.replay[:0]
		}
		r.replay = append(r.replay, r.blk[:]...)
		if !ok {
			return r.handOver()
		}
		if typ == tar.TypeXHeader {
			ok, err := r.readPAX(num.size)
			if err != nil {
				return nil, err
			}
			if !ok {
				return r.handOver()
			}
			havePAX = true
			continue
		}
		h := &r.hdr
		*h = tar.Header{Typeflag: typ}
		h.Name = cstring(r.blk[offName : offName+100])
		if prefix := r.blk[offPrefix : offPrefix+155]; prefix[0] != 0 {
			h.Name = cstring(prefix) + "/" + h.Name
		}
		h.Linkname = cstring(r.blk[offLinkname : offLinkname+100])
		h.Size, h.Mode = num.size, num.mode
		h.Uid, h.Gid = int(num.uid), int(num.gid)
		h.ModTime = time.Unix(num.mtime, 0)
		if havePAX {
			if !mergePAX(h, r.pax) {
				return r.handOver()
			}
			h.PAXRecords = r.pax
		}
		if typ == tar.TypeRegA {
			h.Typeflag = tar.TypeReg
			if strings.HasSuffix(h.Name, "/") {
				h.Typeflag = tar.TypeDir
			}
		}
		nb := h.Size
		if headerOnly(h.Typeflag) {
			nb = 0
		}
		if nb < 0 {
			return r.handOver()
		}
		r.remain, r.pad = nb, padding(nb)
		return h, nil
	}
}

// end reads what follows a zero block: a second zero block or nothing ends
// the archive; anything else is a bad header.
func (r *Reader) end() error {
	if _, err := io.ReadFull(r.src, r.blk[:]); err != nil {
		return err
	}
	if r.blk != [blockSize]byte{} {
		return tar.ErrHeader
	}
	return io.EOF
}

// skip discards the rest of the current entry's data and its padding. A
// stream that ends inside the padding ends the archive, as in archive/tar.
func (r *Reader) skip() error {
	if r.remain > 0 {
		n, err := io.CopyN(io.Discard, r.src, r.remain)
		r.remain -= n
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	if r.pad > 0 {
		pad := r.pad
		r.pad = 0
		if err := tryReadFull(r.src, r.blk[:pad]); err != nil {
			return err
		}
	}
	return nil
}

// readPAX reads a PAX 'x' header's data and padding into r.pax (replacing
// earlier records, as archive/tar does). It returns false, with the data
// kept for the replay, for anything to hand over: too large, malformed, or
// a GNU sparse record.
func (r *Reader) readPAX(size int64) (bool, error) {
	if size > maxPAXSize {
		return false, nil
	}
	start := len(r.replay)
	r.replay = slices.Grow(r.replay, int(size))[:start+int(size)]
	if _, err := io.ReadFull(r.src, r.replay[start:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return false, err
	}
	clear(r.pax)
	s := string(r.replay[start:])
	for len(s) > 0 {
		k, v, rest, ok := parseRecord(s)
		if !ok || strings.HasPrefix(k, sparsePrefix) {
			return false, nil
		}
		r.pax[k] = v
		s = rest
	}
	pad := padding(size)
	if err := tryReadFull(r.src, r.blk[:pad]); err != nil {
		return false, err
	}
	r.replay = append(r.replay, r.blk[:pad]...)
	return true, nil
}

// handOver gives the stream, from the current entry's latest PAX header (or
// its first block), to archive/tar for the rest of the archive.
func (r *Reader) handOver() (*tar.Header, error) {
	src := r.src
	if len(r.replay) > 0 {
		src = io.MultiReader(bytes.NewReader(r.replay), r.src)
	}
	r.fb = tar.NewReader(src)
	return r.fb.Next()
}

// numbers are a header's numeric fields, parsed once.
type numbers struct {
	mode, uid, gid, size, mtime int64
}

// simpleBlock parses the numeric fields of the block in r.blk if it is one
// this reader parses itself: a USTAR (or PAX) header with a valid checksum,
// of a type Windows layers use, whose numeric fields are all octal.
func (r *Reader) simpleBlock() (numbers, bool) {
	var n numbers
	b := &r.blk
	if string(b[offMagic:offMagic+6]) != "ustar\x00" || string(b[offTrailer:]) == "tar\x00" {
		return n, false
	}
	switch b[offType] {
	case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeXHeader:
	default:
		return n, false
	}
	want, ok := octal(b[offChksum : offChksum+8])
	if !ok {
		return n, false
	}
	if u, s := checksums(b); want != u && want != s {
		return n, false
	}
	var devmajor, devminor int64 // checked, not kept
	for _, f := range [...]struct {
		off, len int
		dst      *int64
	}{
		{offMode, 8, &n.mode}, {offUID, 8, &n.uid}, {offGID, 8, &n.gid}, {offSize, 12, &n.size},
		{offMtime, 12, &n.mtime}, {offDevmajor, 8, &devmajor}, {offDevminor, 8, &devminor},
	} {
		if *f.dst, ok = octal(b[f.off : f.off+f.len]); !ok {
			return n, false
		}
	}
	return n, true
}

// checksums returns the unsigned and the signed sum of the block's bytes
// with the checksum field counted as spaces; archive/tar accepts either.
func checksums(b *[blockSize]byte) (unsigned, signed int64) {
	var high int64
	for _, c := range b {
		unsigned += int64(c)
		high += int64(c >> 7)
	}
	for _, c := range b[offChksum : offChksum+8] {
		unsigned -= int64(c)
		high -= int64(c >> 7)
	}
	unsigned += 8 * ' '
	return unsigned, unsigned - 256*high
}

// octal parses a numeric header field as archive/tar does for octal ones:
// NULs and spaces trimmed at both ends, then up to the first NUL, octal
// digits only. ok is false for a base-256 field and for anything
// archive/tar refuses.
func octal(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		return 0, false
	}
	i, j := 0, len(b)
	for i < j && (b[i] == ' ' || b[i] == 0) {
		i++
	}
	for j > i && (b[j-1] == ' ' || b[j-1] == 0) {
		j--
	}
	b = b[i:j]
	if k := bytes.IndexByte(b, 0); k >= 0 {
		b = b[:k]
	}
	var x int64
	for _, c := range b {
		if c < '0' || c > '7' {
			return 0, false
		}
		x = x<<3 | int64(c-'0')
	}
	return x, true
}

// cstring is the field up to its first NUL.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// padding is the zero bytes after n bytes of data, up to a block.
func padding(n int64) int64 { return -n & (blockSize - 1) }

func headerOnly(typ byte) bool {
	switch typ {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return true
	}
	return false
}

// tryReadFull fills b, returning io.EOF if the stream ends first.
func tryReadFull(r io.Reader, b []byte) error {
	n := 0
	var err error
	for n < len(b) && err == nil {
		var m int
		m, err = r.Read(b[n:])
		n += m
	}
	if n == len(b) && err == io.EOF {
		err = nil
	}
	return err
}

// parseRecord parses one PAX record, "%d %s=%s\n", from the start of s.
// ok is false for a record archive/tar refuses.
func parseRecord(s string) (k, v, rest string, ok bool) {
	nStr, after, ok := strings.Cut(s, " ")
	if !ok {
		return "", "", s, false
	}
	n, err := strconv.ParseInt(nStr, 10, 0)
	if err != nil || n < 5 || n > int64(len(s)) {
		return "", "", s, false
	}
	n -= int64(len(nStr) + 1)
	if n <= 0 {
		return "", "", s, false
	}
	rec, nl, rest := after[:n-1], after[n-1:n], after[n:]
	if nl != "\n" {
		return "", "", s, false
	}
	k, v, ok = strings.Cut(rec, "=")
	if !ok || k == "" || strings.Contains(k, "=") {
		return "", "", s, false
	}
	switch k {
	case "path", "linkpath", "uname", "gname":
		ok = strings.IndexByte(v, 0) < 0
	default:
		ok = strings.IndexByte(k, 0) < 0
	}
	return k, v, rest, ok
}

// mergePAX applies the records archive/tar applies to the fields Next
// fills (an empty value keeps the header's). It returns false where
// archive/tar refuses a value.
func mergePAX(h *tar.Header, recs map[string]string) bool {
	if v := recs["path"]; v != "" {
		h.Name = v
	}
	if v := recs["linkpath"]; v != "" {
		h.Linkname = v
	}
	uid, gid := int64(h.Uid), int64(h.Gid)
	for _, f := range [...]struct {
		key string
		dst *int64
	}{{"uid", &uid}, {"gid", &gid}, {"size", &h.Size}} {
		if v := recs[f.key]; v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return false
			}
			*f.dst = n
		}
	}
	h.Uid, h.Gid = int(uid), int(gid)
	for _, f := range [...]struct {
		key string
		dst *time.Time
	}{{"atime", &h.AccessTime}, {"mtime", &h.ModTime}, {"ctime", &h.ChangeTime}} {
		if v := recs[f.key]; v != "" {
			t, ok := ParsePAXTime(v)
			if !ok {
				return false
			}
			*f.dst = t
		}
	}
	return true
}

// ParsePAXTime parses a PAX time, "secs[.frac]" with negative seconds
// allowed and digits past nanoseconds truncated, exactly as archive/tar
// does.
func ParsePAXTime(s string) (time.Time, bool) {
	secStr, frac, _ := strings.Cut(s, ".")
	secs, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	if frac == "" {
		return time.Unix(secs, 0), true
	}
	if strings.Trim(frac, "0123456789") != "" {
		return time.Time{}, false
	}
	if len(frac) > 9 {
		frac = frac[:9]
	}
	frac += strings.Repeat("0", 9-len(frac))
	ns, _ := strconv.ParseInt(frac, 10, 64)
	if strings.HasPrefix(secStr, "-") {
		ns = -ns
	}
	return time.Unix(secs, ns), true
}
