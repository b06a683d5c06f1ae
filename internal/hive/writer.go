package hive

import (
	"fmt"
	"io"
	"slices"
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
	o := writeOptions{minor: flatMinor}
	for _, opt := range opts {
		opt(&o)
	}
	if o.layered {
		o.minor = layeredMinor
	}
	w := &writer{o: o, sks: map[string]int{}}
	w.buf = make([]byte, headerSize, max(o.sizeHint, headerSize+binAlign))
	w.binEnd = headerSize
	rootOff, err := w.key(root, noCell, 0, defaultSecurity)
	if err != nil {
		return nil, err
	}
	w.finishBin()
	w.finishSecurity()
	w.header(rootOff)
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

type writer struct {
	o        writeOptions
	buf      []byte // base block + bins written so far
	binStart int    // file offset of the current bin
	binEnd   int    // file offset where the current bin ends
	sks      map[string]int
	skList   []skCell
	newest   uint64
}

type skCell struct {
	off  uint32
	refs uint32
}

// rel converts a file offset into a cell offset (relative to the first bin).
func rel(fileOff int) uint32 { return uint32(fileOff - headerSize) }

// alloc reserves an allocated cell with room for n bytes of data and returns
// its file offset. A cell that does not fit the current bin starts a new one
// (bigger than 4 KiB if the cell needs it); the rest of the old bin becomes
// a free cell.
func (w *writer) alloc(n int) int {
	size := (n + 4 + 7) &^ 7
	if len(w.buf)+size > w.binEnd {
		w.finishBin()
		w.newBin(size)
	}
	off := len(w.buf)
	w.grow(size)
	le.PutUint32(w.buf[off:], uint32(-int32(size)))
	return off
}

func (w *writer) grow(n int) {
	if len(w.buf)+n > cap(w.buf) {
		nb := make([]byte, len(w.buf), len(w.buf)+n+len(w.buf)/4+binAlign)
		copy(nb, w.buf)
		w.buf = nb
	}
	// Capacity beyond len is never written before (make zeroes it), so the
	// new bytes are already zero.
	w.buf = w.buf[:len(w.buf)+n]
}

func (w *writer) newBin(cell int) {
	size := (cell + binHeaderSize + binAlign - 1) &^ (binAlign - 1)
	start := len(w.buf)
	w.grow(binHeaderSize)
	copy(w.buf[start:], "hbin")
	le.PutUint32(w.buf[start+binOffset:], rel(start))
	le.PutUint32(w.buf[start+binSize:], uint32(size))
	w.binStart, w.binEnd = start, start+size
}

// finishBin turns the unused end of the current bin into one free cell.
func (w *writer) finishBin() {
	if rest := w.binEnd - len(w.buf); rest > 0 {
		off := len(w.buf)
		w.grow(rest)
		le.PutUint32(w.buf[off:], uint32(rest))
	}
}

// key writes k's subtree in pre-order (nk, class, security, values, subkey
// list, then each subkey) and returns the nk cell's offset.
func (w *writer) key(k *Key, parent uint32, depth int, inheritedSD []byte) (uint32, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("key %q: deeper than %d levels", k.Name, maxDepth)
	}
	lazy := k.origin()
	if err := k.Load(); err != nil {
		return 0, err
	}
	defer k.unload(lazy)
	if !w.o.layered && (k.Layer != LayerNone || k.InheritClass) {
		return 0, fmt.Errorf("key %q: layered key (%s) in a flat hive; merge it or write with WithLayered", k.Name, k.Layer)
	}
	name := encodeName(k.Name)
	if len(name) > maxNameLen || (len(name) == 0 && parent != noCell) {
		return 0, fmt.Errorf("key %q: name must have 1 to %d characters", k.Name, maxNameLen)
	}
	comp := compressible(name)
	nk := w.alloc(nkFixed + nameBytes(name, comp))
	var classOff uint32 = noCell
	class := encodeName(k.Class)
	if len(class) > 0 {
		c := w.alloc(2 * len(class))
		putName(w.buf[c+4:], class, false)
		classOff = rel(c)
	}
	sd := k.Security
	if sd == nil {
		sd = inheritedSD
	}
	skOff := w.security(sd)

	valList, maxValName, maxValData, err := w.values(k)
	if err != nil {
		return 0, err
	}

	subs := slices.Clone(k.Subkeys)
	names := make(map[*Key][]uint16, len(subs))
	for _, s := range subs {
		names[s] = encodeName(s.Name)
	}
	slices.SortStableFunc(subs, func(a, b *Key) int { return compareNames(names[a], names[b]) })
	var maxSubName, maxSubClass int
	for i, s := range subs {
		if i > 0 && compareNames(names[subs[i-1]], names[s]) == 0 {
			return 0, fmt.Errorf("key %q: two subkeys named %q", k.Name, s.Name)
		}
		maxSubName = max(maxSubName, 2*len(names[s]))
		maxSubClass = max(maxSubClass, 2*len(encodeName(s.Class)))
	}
	var listOff uint32 = noCell
	var leaves []int // file offsets of the lh leaves, in order
	if len(subs) > 0 {
		if len(subs) <= maxLeaf {
			l := w.alloc(4 + 8*len(subs))
			leaves = []int{l}
			listOff = rel(l)
		} else {
			nLeaves := (len(subs) + maxLeaf - 1) / maxLeaf
			ri := w.alloc(4 + 4*nLeaves)
			copy(w.buf[ri+4:], "ri")
			le.PutUint16(w.buf[ri+6:], uint16(nLeaves))
			listOff = rel(ri)
			for i := 0; i < nLeaves; i++ {
				n := min(maxLeaf, len(subs)-i*maxLeaf)
				l := w.alloc(4 + 8*n)
				le.PutUint32(w.buf[ri+8+4*i:], rel(l))
				leaves = append(leaves, l)
			}
		}
	}
	for i, s := range subs {
		off, err := w.key(s, rel(nk), depth+1, sd)
		if err != nil {
			return 0, err
		}
		l := leaves[i/maxLeaf]
		j := i % maxLeaf
		copy(w.buf[l+4:], "lh")
		le.PutUint16(w.buf[l+6:], uint16(min(maxLeaf, len(subs)-(i/maxLeaf)*maxLeaf)))
		le.PutUint32(w.buf[l+8+8*j:], off)
		le.PutUint32(w.buf[l+12+8*j:], lhHash(names[s]))
	}

	c := w.buf[nk+4:]
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
	le.PutUint32(c[nkValues:], uint32(len(k.Values)))
	le.PutUint32(c[nkValueList:], valList)
	le.PutUint32(c[nkSecurity:], skOff)
	le.PutUint32(c[nkClass:], classOff)
	le.PutUint32(c[nkMaxSubkeyName:], uint32(maxSubName))
	le.PutUint32(c[nkMaxSubkeyClass:], uint32(maxSubClass))
	le.PutUint32(c[nkMaxValueName:], uint32(maxValName))
	le.PutUint32(c[nkMaxValueData:], uint32(maxValData))
	le.PutUint16(c[nkNameLen:], uint16(nameBytes(name, comp)))
	le.PutUint16(c[nkClassLen:], uint16(2*len(class)))
	putName(c[nkFixed:], name, comp)
	return rel(nk), nil
}

// values writes k's value list, value cells and data, returning the list's
// offset and the largest value name (bytes of UTF-16) and data sizes.
func (w *writer) values(k *Key) (list uint32, maxName, maxData int, err error) {
	if len(k.Values) == 0 {
		return noCell, 0, 0, nil
	}
	if err := uniqueValueNames(k); err != nil {
		return 0, 0, 0, err
	}
	l := w.alloc(4 * len(k.Values))
	for i, v := range k.Values {
		if v.Tombstone && !w.o.layered {
			return 0, 0, 0, fmt.Errorf("key %q: value %q is a tombstone in a flat hive", k.Name, v.Name)
		}
		name := encodeName(v.Name)
		if len(name) > maxValueLen {
			return 0, 0, 0, fmt.Errorf("key %q: value name longer than %d characters", k.Name, maxValueLen)
		}
		if int64(len(v.Data)) >= dataResident {
			return 0, 0, 0, fmt.Errorf("key %q: value %q: %d bytes of data is too large", k.Name, v.Name, len(v.Data))
		}
		comp := compressible(name)
		vk := w.alloc(vkFixed + nameBytes(name, comp))
		le.PutUint32(w.buf[l+4+4*i:], rel(vk))
		c := w.buf[vk+4:]
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
		n := len(v.Data)
		switch {
		case n <= residentMax && n > 0:
			le.PutUint32(c[vkDataSize:], uint32(n)|dataResident)
			copy(c[vkData:vkData+4], v.Data)
		case n == 0:
			le.PutUint32(c[vkDataSize:], dataResident)
		default:
			le.PutUint32(c[vkDataSize:], uint32(n))
			d := w.data(v.Data) // may move w.buf: write through the offset
			le.PutUint32(w.buf[vk+4+vkData:], d)
		}
		maxName = max(maxName, 2*len(name))
		maxData = max(maxData, n)
	}
	return rel(l), maxName, maxData, nil
}

// data writes value data in one cell, or as a db record with 16,344-byte
// segments when it is larger than that.
func (w *writer) data(d []byte) uint32 {
	if len(d) <= bigDataSegment {
		c := w.alloc(len(d))
		copy(w.buf[c+4:], d)
		return rel(c)
	}
	segs := (len(d) + bigDataSegment - 1) / bigDataSegment
	db := w.alloc(8)
	list := w.alloc(4 * segs)
	copy(w.buf[db+4:], "db")
	le.PutUint16(w.buf[db+6:], uint16(segs))
	le.PutUint32(w.buf[db+8:], rel(list))
	for i := 0; i < segs; i++ {
		part := d[i*bigDataSegment : min(len(d), (i+1)*bigDataSegment)]
		// Every segment gets a full-size cell, as Windows allocates them
		// (see BigDataHive); libregf reads the last one's size from it.
		s := w.alloc(bigDataSegment)
		copy(w.buf[s+4:], part)
		le.PutUint32(w.buf[list+4+4*i:], rel(s))
	}
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
	copy(w.buf[c+4:], "sk")
	le.PutUint32(w.buf[c+4+skSize:], uint32(len(sd)))
	copy(w.buf[c+4+skFixed:], sd)
	w.sks[string(sd)] = len(w.skList)
	w.skList = append(w.skList, skCell{off: rel(c), refs: 1})
	return rel(c)
}

func (w *writer) finishSecurity() {
	n := len(w.skList)
	for i, s := range w.skList {
		c := w.buf[headerSize+int(s.off)+4:]
		le.PutUint32(c[skFlink:], w.skList[(i+1)%n].off)
		le.PutUint32(c[skBlink:], w.skList[(i+n-1)%n].off)
		le.PutUint32(c[skRefCount:], s.refs)
	}
}

func (w *writer) header(root uint32) {
	h := w.buf[:headerSize]
	clear(h)
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
	le.PutUint32(h[hdrBinsSize:], uint32(len(w.buf)-headerSize))
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
	for i, c := range u {
		le.PutUint16(b[2*i:], upcase(c))
	}
	return string(b)
}

// uniqueValueNames refuses two values whose names differ only in case. Most
// keys have a handful of values: compare pairs; use a map above that.
func uniqueValueNames(k *Key) error {
	if len(k.Values) > 16 {
		seen := make(map[string]bool, len(k.Values))
		for _, v := range k.Values {
			f := foldString(encodeName(v.Name))
			if seen[f] {
				return fmt.Errorf("key %q: two values named %q", k.Name, v.Name)
			}
			seen[f] = true
		}
		return nil
	}
	for i := range k.Values {
		for j := i + 1; j < len(k.Values); j++ {
			if equalFold(k.Values[i].Name, k.Values[j].Name) {
				return fmt.Errorf("key %q: two values named %q", k.Name, k.Values[j].Name)
			}
		}
	}
	return nil
}

// equalFold compares two names the Windows way (upper-case table).
func equalFold(a, b string) bool {
	if a == b {
		return true
	}
	return compareNames(encodeName(a), encodeName(b)) == 0
}
