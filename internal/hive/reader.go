package hive

import (
	"fmt"
	"os"
	"slices"
)

// Header is the part of the base block a caller may want to see.
type Header struct {
	Major, Minor uint32
	Flags        uint32 // FlagLayered for a container delta
	Timestamp    uint64 // FILETIME of the last write
	FileName     string // informational name Windows stores (may be empty)
	Offline      bool   // written by the offline registry library ("OfRg")
}

// Hive is an opened registry hive. Keys read from it refer to its bytes, so
// the data must not change while keys are in use.
type Hive struct {
	Header
	data    []byte // whole file
	bins    []byte // data[headerSize : headerSize+binsSize]
	starts  []uint64
	root    uint32
	sds     map[uint32][]byte // sk offset -> descriptor, shared between keys
	layered bool
}

// OpenFile reads and opens the hive at path.
func OpenFile(path string) (*Hive, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	h, err := Open(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// Open parses the base block and the hive bins of data and checks that every
// cell lies inside its bin. It refuses dirty hives (ErrDirty) and hives with
// a bad checksum (ErrChecksum); other problems wrap ErrCorrupt.
func Open(data []byte) (*Hive, error) {
	if len(data) < headerSize {
		return nil, corruptFile("file is %d bytes, shorter than the 4096-byte base block", len(data))
	}
	if string(data[hdrSignature:hdrSignature+4]) != "regf" {
		return nil, corruptFile("no regf signature")
	}
	if got, want := le.Uint32(data[hdrChecksum:]), checksum(data); got != want {
		return nil, fmt.Errorf("%w: stored %#x, computed %#x", ErrChecksum, got, want)
	}
	if s1, s2 := le.Uint32(data[hdrSeq1:]), le.Uint32(data[hdrSeq2:]); s1 != s2 {
		return nil, fmt.Errorf("%w (sequence numbers %d and %d)", ErrDirty, s1, s2)
	}
	h := &Hive{data: data, sds: map[uint32][]byte{}}
	h.Major, h.Minor = le.Uint32(data[hdrMajor:]), le.Uint32(data[hdrMinor:])
	if h.Major != 1 || h.Minor < 2 || h.Minor > 6 {
		return nil, corruptFile("unsupported format version %d.%d (want 1.2 to 1.6)", h.Major, h.Minor)
	}
	if t := le.Uint32(data[hdrFileType:]); t != 0 {
		return nil, corruptFile("file type %d is not a primary hive (a transaction log?)", t)
	}
	if f := le.Uint32(data[hdrFileFormat:]); f != 1 {
		return nil, corruptFile("file format %d (want 1)", f)
	}
	h.Flags = le.Uint32(data[hdrFlags:])
	h.Timestamp = le.Uint64(data[hdrTimestamp:])
	h.FileName = fileName(data[hdrFileName : hdrFileName+hdrFileNameLen])
	h.Offline = string(data[176:180]) == "OfRg"
	h.layered = h.Flags&FlagLayered != 0 || h.Minor >= 6
	size := le.Uint32(data[hdrBinsSize:])
	if size == 0 || size%binAlign != 0 || uint64(size) > uint64(len(data)-headerSize) {
		return nil, corruptFile("hive bins size %d does not fit a %d-byte file in 4096-byte units", size, len(data))
	}
	h.bins = data[headerSize : headerSize+int(size)]
	if err := h.scanBins(); err != nil {
		return nil, err
	}
	h.root = le.Uint32(data[hdrRootCell:])
	if _, err := h.cell(h.root, "root key"); err != nil {
		return nil, err
	}
	return h, nil
}

func fileName(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := le.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string16(u)
}

// scanBins walks every bin and every cell in it, recording where allocated
// cells start: cell() accepts only those offsets.
func (h *Hive) scanBins() error {
	h.starts = make([]uint64, (len(h.bins)/8+63)/64)
	for pos := 0; pos < len(h.bins); {
		off := uint32(pos)
		b := h.bins[pos:]
		if len(b) < binHeaderSize || string(b[:4]) != "hbin" {
			return corrupt(off, "no hbin signature where a hive bin should start")
		}
		if got := le.Uint32(b[binOffset:]); got != off {
			return corrupt(off, "hive bin says it is at offset %#x", got)
		}
		size := le.Uint32(b[binSize:])
		if size < binAlign || size%binAlign != 0 || uint64(size) > uint64(len(b)) {
			return corrupt(off, "hive bin size %d is not a multiple of 4096 inside the file", size)
		}
		end := pos + int(size)
		for c := pos + binHeaderSize; c < end; {
			if end-c < 4 {
				return corrupt(uint32(c), "cell header crosses the end of its bin")
			}
			raw := int32(le.Uint32(h.bins[c:]))
			n := int(raw)
			if raw < 0 {
				n = -int(raw)
			}
			if n < 8 || n%8 != 0 || n > end-c {
				return corrupt(uint32(c), "cell size %d is not a multiple of 8 inside its bin", raw)
			}
			if raw < 0 {
				h.starts[c/8/64] |= 1 << (uint(c/8) % 64)
			}
			c += n
		}
		pos = end
	}
	return nil
}

// cell returns the data of the allocated cell at off (after its size field).
func (h *Hive) cell(off uint32, what string) ([]byte, error) {
	if off%8 != 0 || uint64(off) >= uint64(len(h.bins)) || h.starts[off/8/64]&(1<<(uint(off/8)%64)) == 0 {
		return nil, corrupt(off, "%s: offset %#x is not an allocated cell", what, off)
	}
	n := int(-int32(le.Uint32(h.bins[off:])))
	return h.bins[int(off)+4 : int(off)+n], nil
}

// Root returns the root key, unloaded.
func (h *Hive) Root() (*Key, error) {
	k, err := h.loadKey(h.root, noCell, 0)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// ReadTree opens data and loads the whole tree.
func ReadTree(data []byte) (*Key, error) {
	h, err := Open(data)
	if err != nil {
		return nil, err
	}
	root, err := h.Root()
	if err != nil {
		return nil, err
	}
	if err := root.LoadAll(); err != nil {
		return nil, err
	}
	return root, nil
}

// loadKey parses the nk cell at off. parent is the nk that lists it (noCell
// for the root, whose parent field is not checked).
func (h *Hive) loadKey(off, parent uint32, depth int) (*Key, error) {
	if depth > maxDepth {
		return nil, corrupt(off, "key deeper than %d levels (a loop?)", maxDepth)
	}
	c, err := h.cell(off, "key")
	if err != nil {
		return nil, err
	}
	if len(c) < nkFixed || string(c[:2]) != "nk" {
		return nil, corrupt(off, "not a key (nk) cell")
	}
	if parent != noCell {
		if off == h.root {
			return nil, corrupt(off, "the root key is listed as a subkey (a loop)")
		}
		if p := le.Uint32(c[nkParent:]); p != parent {
			return nil, corrupt(off, "key's parent field %#x is not the key listing it (%#x)", p, parent)
		}
	}
	flags := le.Uint16(c[nkFlags:])
	nameLen := int(le.Uint16(c[nkNameLen:]))
	if nkFixed+nameLen > len(c) {
		return nil, corrupt(off, "key name length %d overruns its cell", nameLen)
	}
	if nameLen == 0 && parent != noCell {
		return nil, corrupt(off, "key with an empty name")
	}
	k := &Key{
		Name:       decodeName(c[nkFixed:nkFixed+nameLen], flags&keyCompName != 0),
		LastWrite:  le.Uint64(c[nkLastWrite:]),
		Flags:      flags &^ keyCompName,
		AccessBits: c[nkAccessBits],
		src:        h, off: off, depth: depth,
		nsubs:  le.Uint32(c[nkSubkeys:]),
		subOff: le.Uint32(c[nkSubkeyList:]),
		nvals:  le.Uint32(c[nkValues:]),
		valOff: le.Uint32(c[nkValueList:]),
	}
	if h.layered {
		k.Layer = Layer(c[nkLayer] & layerSemanticsMask)
		k.InheritClass = c[nkLayer]&layerInheritClass != 0
	}
	if cl := int(le.Uint16(c[nkClassLen:])); cl > 0 {
		cc, err := h.cell(le.Uint32(c[nkClass:]), "class name")
		if err != nil {
			return nil, err
		}
		if cl > len(cc) || cl%2 != 0 {
			return nil, corrupt(off, "class name length %d does not fit its %d-byte cell", cl, len(cc))
		}
		k.Class = decodeName(cc[:cl], false)
	}
	if so := le.Uint32(c[nkSecurity:]); so != noCell {
		if k.Security, err = h.security(so); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func (h *Hive) security(off uint32) ([]byte, error) {
	if sd, ok := h.sds[off]; ok {
		return sd, nil
	}
	c, err := h.cell(off, "security descriptor")
	if err != nil {
		return nil, err
	}
	if len(c) < skFixed || string(c[:2]) != "sk" {
		return nil, corrupt(off, "not a security (sk) cell")
	}
	n := int(le.Uint32(c[skSize:]))
	if n > len(c)-skFixed {
		return nil, corrupt(off, "security descriptor size %d overruns its cell", n)
	}
	sd := c[skFixed : skFixed+n]
	h.sds[off] = sd
	return sd, nil
}

// loadChildren fills k.Values and k.Subkeys (unloaded) from k's nk cell.
func (h *Hive) loadChildren(k *Key) error {
	vals, subs, err := h.children(nil, k)
	if err != nil {
		return err
	}
	k.Values, k.Subkeys = vals, subs
	return nil
}

// children reads k's values, appended to vals (nil: a new slice), and its
// subkeys, unloaded and in Windows order, without keeping them in k.
func (h *Hive) children(vals []Value, k *Key) ([]Value, []*Key, error) {
	vals, err := h.appendValues(vals, k)
	if err != nil {
		return nil, nil, err
	}
	subs, err := h.subkeys(k)
	if err != nil {
		return nil, nil, err
	}
	return vals, subs, nil
}

// subkeys reads k's subkeys, unloaded, in Windows order.
func (h *Hive) subkeys(k *Key) ([]*Key, error) {
	offs, err := h.subkeyOffsets(k.subOff, k.nsubs)
	if err != nil {
		return nil, err
	}
	subs := make([]*Key, 0, len(offs))
	for _, o := range offs {
		s, err := h.loadKey(o, k.off, k.depth+1)
		if err != nil {
			return nil, err
		}
		subs = append(subs, s)
	}
	if err := sortSubkeys(subs); err != nil {
		return nil, fmt.Errorf("key %q: %w", k.Name, err)
	}
	return subs, nil
}

// sortSubkeys puts keys in Windows order (a hive may store them out of
// order) and refuses two keys with the same name.
func sortSubkeys(subs []*Key) error {
	sorted := true
	for i := 1; i < len(subs); i++ {
		if compareKeys(subs[i-1], subs[i]) >= 0 {
			sorted = false
			break
		}
	}
	if sorted {
		return nil
	}
	out := sortKeys(subs)
	for i := 1; i < len(out); i++ {
		if compareKeys(out[i-1], out[i]) == 0 {
			return &FormatError{Offset: -1, Msg: fmt.Sprintf("two subkeys named %q", out[i].Name)}
		}
	}
	copy(subs, out)
	return nil
}

// sortKeys returns a copy of keys in Windows order (stable), converting each
// name to UTF-16 once rather than in every comparison.
func sortKeys(keys []*Key) []*Key {
	names := make([][]uint16, len(keys))
	idx := make([]int, len(keys))
	for i, k := range keys {
		names[i], idx[i] = encodeName(k.Name), i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return compareNames(names[a], names[b]) })
	out := make([]*Key, len(keys))
	for i, j := range idx {
		out[i] = keys[j]
	}
	return out
}

// appendValues appends k's values, read from its value list, to vals (a
// new slice when vals is nil).
func (h *Hive) appendValues(vals []Value, k *Key) ([]Value, error) {
	if k.nvals == 0 {
		return vals, nil
	}
	lc, err := h.cell(k.valOff, "value list")
	if err != nil {
		return nil, err
	}
	if uint64(k.nvals)*4 > uint64(len(lc)) {
		return nil, corrupt(k.valOff, "value list of %d entries overruns its %d-byte cell", k.nvals, len(lc))
	}
	if vals == nil {
		vals = make([]Value, 0, k.nvals)
	}
	for i := uint32(0); i < k.nvals; i++ {
		v, err := h.value(le.Uint32(lc[4*i:]))
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
	}
	return vals, nil
}

func (h *Hive) value(off uint32) (Value, error) {
	c, err := h.cell(off, "value")
	if err != nil {
		return Value{}, err
	}
	if len(c) < vkFixed || string(c[:2]) != "vk" {
		return Value{}, corrupt(off, "not a value (vk) cell")
	}
	nameLen := int(le.Uint16(c[vkNameLen:]))
	if vkFixed+nameLen > len(c) {
		return Value{}, corrupt(off, "value name length %d overruns its cell", nameLen)
	}
	flags := le.Uint16(c[vkFlags:])
	v := Value{
		Name: decodeName(c[vkFixed:vkFixed+nameLen], flags&vkCompName != 0),
		Type: le.Uint32(c[vkType:]),
	}
	if h.layered {
		v.Tombstone = flags&vkTombstone != 0
	}
	size := le.Uint32(c[vkDataSize:])
	switch n := size &^ dataResident; {
	case size&dataResident != 0:
		if n > residentMax {
			return Value{}, corrupt(off, "resident value data of %d bytes (at most 4 fit)", n)
		}
		v.Data = c[vkData : vkData+int(n)]
	case n == 0:
	default:
		if v.Data, err = h.valueData(le.Uint32(c[vkData:]), n); err != nil {
			return Value{}, err
		}
	}
	return v, nil
}

// valueData reads n bytes of value data at off: one cell, or a db big-data record
// (regf 1.4 and later) for more than 16,344 bytes.
func (h *Hive) valueData(off, n uint32) ([]byte, error) {
	c, err := h.cell(off, "value data")
	if err != nil {
		return nil, err
	}
	if n > bigDataSegment && h.Minor >= 4 && len(c) >= 8 && string(c[:2]) == "db" {
		segs := uint32(le.Uint16(c[2:]))
		if uint64(segs)*bigDataSegment < uint64(n) {
			return nil, corrupt(off, "big data of %d bytes in %d segments", n, segs)
		}
		lc, err := h.cell(le.Uint32(c[4:]), "big data segment list")
		if err != nil {
			return nil, err
		}
		if uint64(segs)*4 > uint64(len(lc)) {
			return nil, corrupt(off, "big data segment list overruns its cell")
		}
		out := make([]byte, 0, n)
		for i := uint32(0); i < segs && uint32(len(out)) < n; i++ {
			sc, err := h.cell(le.Uint32(lc[4*i:]), "big data segment")
			if err != nil {
				return nil, err
			}
			take := min(uint32(len(sc)), bigDataSegment, n-uint32(len(out)))
			out = append(out, sc[:take]...)
		}
		if uint32(len(out)) != n {
			return nil, corrupt(off, "big data segments hold %d of %d bytes", len(out), n)
		}
		return out, nil
	}
	if uint64(n) > uint64(len(c)) {
		return nil, corrupt(off, "value data of %d bytes overruns its %d-byte cell", n, len(c))
	}
	return c[:n], nil
}

// subkeyOffsets reads a subkey list (lf, lh, li, or an ri of those) and
// checks it holds exactly n keys.
func (h *Hive) subkeyOffsets(off, n uint32) ([]uint32, error) {
	if n == 0 {
		return nil, nil
	}
	out := make([]uint32, 0, min(n, 1<<16))
	if err := h.appendList(&out, off, n, true); err != nil {
		return nil, err
	}
	if uint32(len(out)) != n {
		return nil, corrupt(off, "subkey list holds %d keys, the key says %d", len(out), n)
	}
	return out, nil
}

func (h *Hive) appendList(out *[]uint32, off, n uint32, allowIndex bool) error {
	c, err := h.cell(off, "subkey list")
	if err != nil {
		return err
	}
	if len(c) < 4 {
		return corrupt(off, "subkey list cell too small")
	}
	count := int(le.Uint16(c[2:]))
	step := 4
	switch sig := string(c[:2]); sig {
	case "lf", "lh":
		step = 8
	case "li":
	case "ri":
		if !allowIndex {
			return corrupt(off, "an ri index inside an ri index")
		}
	default:
		return corrupt(off, "unknown subkey list signature %q", sig)
	}
	if 4+count*step > len(c) {
		return corrupt(off, "subkey list of %d entries overruns its %d-byte cell", count, len(c))
	}
	for i := 0; i < count; i++ {
		e := le.Uint32(c[4+i*step:])
		if c[0] == 'r' {
			if err := h.appendList(out, e, n, false); err != nil {
				return err
			}
			continue
		}
		if uint32(len(*out)) >= n {
			return corrupt(off, "subkey list holds more keys than the key's count %d", n)
		}
		*out = append(*out, e)
	}
	return nil
}
