package hive

import (
	"fmt"
	"io"
	"slices"

	"github.com/cimconv/cimconv/internal/cim"
)

// WriteOption configures Write and Marshal.
type WriteOption func(*writeOptions)

type writeOptions struct {
	minor     uint32
	layered   bool
	timestamp uint64
	hasTime   bool
	fileName  string
	sizeHint  int
}

// WithFileName sets the informational file name stored in the base block
// (Windows stores a tail of the hive's path there; default empty).
func WithFileName(name string) WriteOption { return func(o *writeOptions) { o.fileName = name } }

// WithTimestamp sets the base block's last-write FILETIME (default: the
// newest key's last-write time, so the output depends only on the tree).
func WithTimestamp(ft uint64) WriteOption {
	return func(o *writeOptions) { o.timestamp, o.hasTime = ft, true }
}

// WithLayered writes a regf 1.6 hive with the layered-keys flag, keeping the
// tree's layer semantics, inherit-class bits and value tombstones (a delta).
// Without it the output is a flat regf 1.5 hive and Write refuses a tree that
// still has layered keys in it.
func WithLayered() WriteOption { return func(o *writeOptions) { o.layered = true } }

// WithSizeHint preallocates the output buffer (bytes), so a large hive is not
// copied while it grows.
func WithSizeHint(n int) WriteOption { return func(o *writeOptions) { o.sizeHint = n } }

// Default header version of a flat hive: 1.5 is what offreg writes (see the
// OffHive fixture) and the oldest version with lh lists that every reader
// handles; docs/hive-format.md.
const (
	flatMinor    = 5
	layeredMinor = 6
)

// Marshal writes the tree under root as a fresh, compact hive and returns
// its bytes. The same tree always gives the same bytes.
func Marshal(root *Key, opts ...WriteOption) ([]byte, error) {
	w := newWriter(nil, opts)
	if err := w.write(root); err != nil {
		return nil, err
	}
	return w.buf, nil
}

// Write is Marshal to an io.Writer.
func Write(out io.Writer, root *Key, opts ...WriteOption) error {
	b, err := Marshal(root, opts...)
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	return err
}

// streamWindow is how much of the output WriteAt keeps in memory; cells
// filled in after they left it (a key with a large subtree) are patched
// in place with WriteAt.
const streamWindow = 4 << 20

// WriteAt writes the same bytes as Marshal to out, keeping only a few MiB of
// them in memory, and returns the hive's size. out should be empty (a new
// file); on error its content is undefined.
func WriteAt(out io.WriterAt, root *Key, opts ...WriteOption) (int64, error) {
	w := newWriter(out, opts)
	if err := w.write(root); err != nil {
		return 0, err
	}
	return int64(w.end()), nil
}

func newWriter(out io.WriterAt, opts []WriteOption) *writer {
	o := writeOptions{minor: flatMinor}
	for _, opt := range opts {
		opt(&o)
	}
	if o.layered {
		o.minor = layeredMinor
	}
	w := &writer{o: o, sks: map[string]int{}}
	size := max(o.sizeHint, headerSize+binAlign)
	if out != nil {
		w.async = newAsyncWriter(out)
		size = streamWindow + 2*binAlign
	}
	w.buf = make([]byte, headerSize, size)
	w.binEnd = headerSize
	return w
}

func (w *writer) write(root *Key) (err error) {
	if w.async != nil {
		defer func() {
			if cerr := w.async.close(); err == nil {
				err = cerr
			}
		}()
	}
	rootOff, err := w.key(root, noCell, 0, defaultSecurity)
	if err != nil {
		return err
	}
	w.finishBin()
	w.finishSecurity()
	w.header(rootOff)
	if w.async != nil {
		w.flush()
	}
	return nil
}

type writer struct {
	o        writeOptions
	async    *asyncWriter // nil: the whole hive stays in buf
	buf      []byte       // output from file offset flushed on
	flushed  int          // file offset of buf[0]
	binStart int          // file offset of the current bin
	binEnd   int          // file offset where the current bin ends
	sks      map[string]int
	skList   []skCell
	newest   uint64

	// Scratch space reused from cell to cell (see scratch).
	cellBuf []byte   // a cell's content, before put
	listBuf []byte   // a value list, while its values are written
	vals    []Value  // the values of the key being written, read from its hive
	keyName []uint16 // the UTF-16 name of the key being written
	units   []uint16 // a value name or class in UTF-16
	// offs is a stack of the subkey lists being written: for each key on
	// the current path, its lh leaves' offsets, then the offsets of the
	// subkeys written so far.
	offs []uint32
}

type skCell struct {
	off  uint32
	refs uint32
}

// rel converts a file offset into a cell offset (relative to the first bin).
func rel(fileOff int) uint32 { return uint32(fileOff - headerSize) }

// end is the file offset of the end of the output so far.
func (w *writer) end() int { return w.flushed + len(w.buf) }

// put writes b at file offset off: into buf, or, for bytes already flushed
// to out, in place with WriteAt (queued behind the flush that wrote them).
// A put never straddles the flush point: buf is flushed whole, between cells.
func (w *writer) put(off int, b []byte) {
	if off >= w.flushed {
		copy(w.buf[off-w.flushed:], b)
		return
	}
	w.async.patch(b, off)
}

func (w *writer) put32(off int, v uint32) {
	if off >= w.flushed {
		le.PutUint32(w.buf[off-w.flushed:], v)
		return
	}
	var b [4]byte
	le.PutUint32(b[:], v)
	w.put(off, b[:])
}

// scratch returns n zero bytes in *buf, reusing its array: room to build
// a cell's content in before put, valid until the next scratch of buf.
func scratch(buf *[]byte, n int) []byte {
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	clear(b)
	return b
}

// flush hands buf to the asynchronous writer and carries on in an empty
// window.
func (w *writer) flush() {
	if len(w.buf) == 0 {
		return
	}
	n := len(w.buf)
	w.buf = w.async.window(w.buf, w.flushed)
	w.flushed += n
}

// alloc reserves an allocated cell with room for n bytes of data and returns
// its file offset. A cell that does not fit the current bin starts a new one
// (bigger than 4 KiB if the cell needs it); the rest of the old bin becomes
// a free cell.
func (w *writer) alloc(n int) int {
	size := (n + 4 + 7) &^ 7
	if w.end()+size > w.binEnd {
		w.finishBin()
		w.newBin(size)
	}
	if w.async != nil && len(w.buf) >= streamWindow {
		w.flush()
	}
	off := w.end()
	w.grow(size)
	w.put32(off, uint32(-int32(size)))
	return off
}

func (w *writer) grow(n int) {
	if len(w.buf)+n > cap(w.buf) {
		nb := make([]byte, len(w.buf), len(w.buf)+n+len(w.buf)/4+binAlign)
		copy(nb, w.buf)
		w.buf = nb
	}
	w.buf = w.buf[:len(w.buf)+n]
	if w.async != nil {
		// buf is reused after a flush: clear what it held. (Fresh
		// capacity from make is already zero.)
		clear(w.buf[len(w.buf)-n:])
	}
}

func (w *writer) newBin(cell int) {
	size := (cell + binHeaderSize + binAlign - 1) &^ (binAlign - 1)
	start := w.end()
	w.grow(binHeaderSize)
	var h [binHeaderSize]byte
	copy(h[:], "hbin")
	le.PutUint32(h[binOffset:], rel(start))
	le.PutUint32(h[binSize:], uint32(size))
	w.put(start, h[:])
	w.binStart, w.binEnd = start, start+size
}

// finishBin turns the unused end of the current bin into one free cell.
func (w *writer) finishBin() {
	if rest := w.binEnd - w.end(); rest > 0 {
		off := w.end()
		w.grow(rest)
		w.put32(off, uint32(rest))
	}
}

// key writes k's subtree in pre-order (nk, class, security, values, subkey
// list, then each subkey) and returns the nk cell's offset.
func (w *writer) key(k *Key, parent uint32, depth int, inheritedSD []byte) (uint32, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("key %q: deeper than %d levels", k.Name, maxDepth)
	}
	vals, subs, err := w.children(k)
	if err != nil {
		return 0, err
	}
	if !w.o.layered && (k.Layer != LayerNone || k.InheritClass) {
		return 0, fmt.Errorf("key %q: layered key (%s) in a flat hive; merge it or write with WithLayered", k.Name, k.Layer)
	}
	w.keyName = appendName(w.keyName[:0], k.Name)
	name := w.keyName
	if len(name) > maxNameLen || (len(name) == 0 && parent != noCell) {
		return 0, fmt.Errorf("key %q: name must have 1 to %d characters", k.Name, maxNameLen)
	}
	comp := compressible(name)
	nk := w.alloc(nkFixed + nameBytes(name, comp))
	classOff, classLen := w.class(k.Class)
	sd := k.Security
	if sd == nil {
		sd = inheritedSD
	}
	skOff := w.security(sd)

	valList, maxValName, maxValData, err := w.values(k, vals)
	if err != nil {
		return 0, err
	}

	if !slices.IsSortedFunc(subs, compareKeys) {
		subs = sortKeys(subs)
	}
	var maxSubName, maxSubClass int
	for i, s := range subs {
		if i > 0 && compareKeys(subs[i-1], s) == 0 {
			return 0, fmt.Errorf("key %q: two subkeys named %q", k.Name, s.Name)
		}
		maxSubName = max(maxSubName, 2*utf16Len(s.Name))
		maxSubClass = max(maxSubClass, 2*utf16Len(s.Class))
	}
	base := len(w.offs)
	listOff := w.subkeyList(len(subs))

	// The nk cell is complete before the subkeys are written: only the
	// leaves wait for their offsets.
	c := scratch(&w.cellBuf, nkFixed+nameBytes(name, comp))
	copy(c, "nk")
	flags := k.Flags &^ (KeyHiveEntry | keyCompName)
	if parent == noCell {
		flags |= KeyHiveEntry | KeyNoDelete
		parent = 0
	}
	if comp {
		flags |= keyCompName
	}
	le.PutUint16(c[nkFlags:], flags)
	le.PutUint64(c[nkLastWrite:], k.LastWrite)
	w.newest = max(w.newest, k.LastWrite)
	c[nkAccessBits] = k.AccessBits
	if w.o.layered {
		c[nkLayer] = byte(k.Layer) & layerSemanticsMask
		if k.InheritClass {
			c[nkLayer] |= layerInheritClass
		}
	}
	le.PutUint32(c[nkParent:], parent)
	le.PutUint32(c[nkSubkeys:], uint32(len(subs)))
	le.PutUint32(c[nkSubkeyList:], listOff)
	le.PutUint32(c[nkVolSubkeyList:], noCell)
	le.PutUint32(c[nkValues:], uint32(len(vals)))
	le.PutUint32(c[nkValueList:], valList)
	le.PutUint32(c[nkSecurity:], skOff)
	le.PutUint32(c[nkClass:], classOff)
	le.PutUint32(c[nkMaxSubkeyName:], uint32(maxSubName))
	le.PutUint32(c[nkMaxSubkeyClass:], uint32(maxSubClass))
	le.PutUint32(c[nkMaxValueName:], uint32(maxValName))
	le.PutUint32(c[nkMaxValueData:], uint32(maxValData))
	le.PutUint16(c[nkNameLen:], uint16(nameBytes(name, comp)))
	le.PutUint16(c[nkClassLen:], uint16(classLen))
	putName(c[nkFixed:], name, comp)
	w.put(nk+4, c)

	for _, s := range subs {
		off, err := w.key(s, rel(nk), depth+1, sd)
		if err != nil {
			return 0, err
		}
		w.offs = append(w.offs, off)
	}
	w.leaves(subs, w.offs[base:])
	w.offs = w.offs[:base]
	return rel(nk), nil
}

// children returns k's values and subkeys. A key not loaded yet stays so:
// its values are read into w.vals, which the next key reuses, and its
// subkeys into a new slice.
func (w *writer) children(k *Key) ([]Value, []*Key, error) {
	h := k.origin()
	if h == nil {
		return k.Values, k.Subkeys, nil
	}
	vals, subs, err := h.children(w.vals[:0], k)
	if err != nil {
		return nil, nil, err
	}
	w.vals = vals
	return vals, subs, nil
}

// class writes a key's class name, returning its cell and its length in
// bytes (noCell and 0 for none).
func (w *writer) class(class string) (uint32, int) {
	if class == "" {
		return noCell, 0
	}
	w.units = appendName(w.units[:0], class)
	n := 2 * len(w.units)
	c := w.alloc(n)
	b := scratch(&w.cellBuf, n)
	putName(b, w.units, false)
	w.put(c+4, b)
	return rel(c), n
}

// subkeyList allocates the subkey list of n keys: one lh leaf, or an ri
// index of leaves of up to maxLeaf keys. It pushes the leaves' offsets on
// w.offs (leaves fills them in) and returns the list's offset.
func (w *writer) subkeyList(n int) uint32 {
	if n == 0 {
		return noCell
	}
	nLeaves := (n + maxLeaf - 1) / maxLeaf
	ri := -1
	if nLeaves > 1 {
		ri = w.alloc(4 + 4*nLeaves)
	}
	base := len(w.offs)
	for i := 0; i < nLeaves; i++ {
		l := w.alloc(4 + 8*min(maxLeaf, n-i*maxLeaf))
		w.offs = append(w.offs, rel(l))
	}
	if ri < 0 {
		return w.offs[base]
	}
	d := scratch(&w.cellBuf, 4+4*nLeaves)
	copy(d, "ri")
	le.PutUint16(d[2:], uint16(nLeaves))
	for i, l := range w.offs[base:] {
		le.PutUint32(d[4+4*i:], l)
	}
	w.put(ri+4, d)
	return rel(ri)
}

// leaves writes the lh leaves of subs, sorted, given offs: the leaves'
// offsets (from subkeyList), then the subkeys' nk offsets.
func (w *writer) leaves(subs []*Key, offs []uint32) {
	nLeaves := len(offs) - len(subs)
	keyOffs := offs[nLeaves:]
	for i, l := range offs[:nLeaves] {
		from, to := i*maxLeaf, min(len(subs), (i+1)*maxLeaf)
		d := scratch(&w.cellBuf, 4+8*(to-from))
		copy(d, "lh")
		le.PutUint16(d[2:], uint16(to-from))
		for j := from; j < to; j++ {
			le.PutUint32(d[4+8*(j-from):], keyOffs[j])
			le.PutUint32(d[8+8*(j-from):], lhHashString(subs[j].Name))
		}
		w.put(headerSize+int(l)+4, d)
	}
}

// values writes k's values vals: the value list, value cells and data. It
// returns the list's offset and the largest value name (bytes of UTF-16)
// and data sizes.
func (w *writer) values(k *Key, vals []Value) (list uint32, maxName, maxData int, err error) {
	if len(vals) == 0 {
		return noCell, 0, 0, nil
	}
	if err := uniqueValueNames(k.Name, vals); err != nil {
		return 0, 0, 0, err
	}
	l := w.alloc(4 * len(vals))
	listData := scratch(&w.listBuf, 4*len(vals))
	for i, v := range vals {
		if v.Tombstone && !w.o.layered {
			return 0, 0, 0, fmt.Errorf("key %q: value %q is a tombstone in a flat hive", k.Name, v.Name)
		}
		w.units = appendName(w.units[:0], v.Name)
		name := w.units
		if len(name) > maxValueLen {
			return 0, 0, 0, fmt.Errorf("key %q: value name longer than %d characters", k.Name, maxValueLen)
		}
		if int64(len(v.Data)) >= dataResident {
			return 0, 0, 0, fmt.Errorf("key %q: value %q: %d bytes of data is too large", k.Name, v.Name, len(v.Data))
		}
		comp := compressible(name)
		vk := w.alloc(vkFixed + nameBytes(name, comp))
		le.PutUint32(listData[4*i:], rel(vk))
		n := len(v.Data)
		var dataOff uint32
		if n > residentMax {
			dataOff = w.data(v.Data) // its cells follow the vk cell
		}
		c := scratch(&w.cellBuf, vkFixed+nameBytes(name, comp))
		copy(c, "vk")
		le.PutUint16(c[vkNameLen:], uint16(nameBytes(name, comp)))
		le.PutUint32(c[vkType:], v.Type)
		var flags uint16
		if comp {
			flags |= vkCompName
		}
		if v.Tombstone {
			flags |= vkTombstone
		}
		le.PutUint16(c[vkFlags:], flags)
		putName(c[vkFixed:], name, comp)
		switch {
		case n <= residentMax && n > 0:
			le.PutUint32(c[vkDataSize:], uint32(n)|dataResident)
			copy(c[vkData:vkData+4], v.Data)
		case n == 0:
			le.PutUint32(c[vkDataSize:], dataResident)
		default:
			le.PutUint32(c[vkDataSize:], uint32(n))
			le.PutUint32(c[vkData:], dataOff)
		}
		w.put(vk+4, c)
		maxName = max(maxName, 2*len(name))
		maxData = max(maxData, n)
	}
	w.put(l+4, listData)
	return rel(l), maxName, maxData, nil
}

// data writes value data in one cell, or as a db record with 16,344-byte
// segments when it is larger than that.
func (w *writer) data(d []byte) uint32 {
	if len(d) <= bigDataSegment {
		c := w.alloc(len(d))
		w.put(c+4, d)
		return rel(c)
	}
	segs := (len(d) + bigDataSegment - 1) / bigDataSegment
	db := w.alloc(8)
	list := w.alloc(4 * segs)
	var dbData [8]byte
	copy(dbData[:], "db")
	le.PutUint16(dbData[2:], uint16(segs))
	le.PutUint32(dbData[4:], rel(list))
	w.put(db+4, dbData[:])
	listData := make([]byte, 4*segs)
	for i := 0; i < segs; i++ {
		part := d[i*bigDataSegment : min(len(d), (i+1)*bigDataSegment)]
		// Every segment gets a full-size cell, as Windows allocates them
		// (see BigDataHive); libregf reads the last one's size from it.
		s := w.alloc(bigDataSegment)
		w.put(s+4, part)
		le.PutUint32(listData[4*i:], rel(s))
	}
	w.put(list+4, listData)
	return rel(db)
}

// security returns the sk cell for a descriptor, writing it on first use.
// Reference counts and the flink/blink list are filled in at the end.
func (w *writer) security(sd []byte) uint32 {
	if i, ok := w.sks[string(sd)]; ok {
		w.skList[i].refs++
		return w.skList[i].off
	}
	c := w.alloc(skFixed + len(sd))
	b := scratch(&w.cellBuf, skFixed+len(sd))
	copy(b, "sk")
	le.PutUint32(b[skSize:], uint32(len(sd)))
	copy(b[skFixed:], sd)
	w.put(c+4, b)
	w.sks[string(sd)] = len(w.skList)
	w.skList = append(w.skList, skCell{off: rel(c), refs: 1})
	return rel(c)
}

func (w *writer) finishSecurity() {
	n := len(w.skList)
	for i, s := range w.skList {
		var b [12]byte
		le.PutUint32(b[0:], w.skList[(i+1)%n].off)
		le.PutUint32(b[4:], w.skList[(i+n-1)%n].off)
		le.PutUint32(b[8:], s.refs)
		w.put(headerSize+int(s.off)+4+skFlink, b[:])
	}
}

func (w *writer) header(root uint32) {
	h := make([]byte, headerSize)
	copy(h, "regf")
	le.PutUint32(h[hdrSeq1:], 1)
	le.PutUint32(h[hdrSeq2:], 1)
	ts := w.newest
	if w.o.hasTime {
		ts = w.o.timestamp
	}
	le.PutUint64(h[hdrTimestamp:], ts)
	le.PutUint32(h[hdrMajor:], 1)
	le.PutUint32(h[hdrMinor:], w.o.minor)
	le.PutUint32(h[hdrFileFormat:], 1)
	le.PutUint32(h[hdrRootCell:], root)
	le.PutUint32(h[hdrBinsSize:], uint32(w.end()-headerSize))
	le.PutUint32(h[hdrClustering:], 1)
	fn := encodeName(w.o.fileName)
	if len(fn) > hdrFileNameLen/2-1 {
		fn = fn[len(fn)-(hdrFileNameLen/2-1):]
	}
	putName(h[hdrFileName:], fn, false)
	if w.o.layered {
		le.PutUint32(h[hdrFlags:], FlagLayered)
	}
	le.PutUint32(h[hdrChecksum:], checksum(h))
	w.put(0, h)
}

func nameBytes(u []uint16, comp bool) int {
	if comp {
		return len(u)
	}
	return 2 * len(u)
}

func putName(dst []byte, u []uint16, comp bool) {
	for i, c := range u {
		if comp {
			dst[i] = byte(c)
		} else {
			le.PutUint16(dst[2*i:], c)
		}
	}
}

// foldString is a name's case-folded form, for maps of names.
func foldString(u []uint16) string {
	b := make([]byte, 2*len(u))
	up := cim.UpcaseTable()
	for i, c := range u {
		le.PutUint16(b[2*i:], up[c])
	}
	return string(b)
}

// uniqueValueNames refuses two values whose names differ only in case. Most
// keys have a handful of values: compare pairs; use a map above that.
func uniqueValueNames(key string, vals []Value) error {
	if len(vals) > 16 {
		seen := make(map[string]bool, len(vals))
		for _, v := range vals {
			f := foldString(encodeName(v.Name))
			if seen[f] {
				return fmt.Errorf("key %q: two values named %q", key, v.Name)
			}
			seen[f] = true
		}
		return nil
	}
	for i := range vals {
		for j := i + 1; j < len(vals); j++ {
			if equalFold(vals[i].Name, vals[j].Name) {
				return fmt.Errorf("key %q: two values named %q", key, vals[j].Name)
			}
		}
	}
	return nil
}

// equalFold compares two names the Windows way (upper-case table).
func equalFold(a, b string) bool {
	return a == b || compareNameStrings(a, b) == 0
}

// utf16Len is the number of UTF-16 code units of s.
func utf16Len(s string) int {
	if isASCII(s) {
		return len(s)
	}
	return len(encodeName(s))
}
