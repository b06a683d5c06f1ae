package cim

import (
	"encoding/binary"
	"fmt"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// On-disk layout of a classic (region-file) CIM. Everything is little-endian.
// The layouts below were checked against the public sources listed in
// docs/cim-format.md (ambarve/hcsshim@cimfs internal/cimfs/format,
// microsoft/hcsshim v0.15.0 pkg/cimfs/format); fields marked "reserved" are
// written as zero and ignored when read.

// magic starts every CIM-related file.
var magic = [8]byte{'c', 'i', 'm', 'f', 'i', 'l', 'e', '0'}

// File types in CommonHeader.Type.
const (
	fileTypeImage    = 0
	fileTypeRegion   = 1
	fileTypeObjectID = 2
)

// Region types in RegionHeader.Type. Each region file holds objects of one kind.
const (
	RegionMetadata  = 0 // file tables, link tables, SDs, EAs, reparse data, upcase table
	RegionData      = 1 // file data, each stream 4 KiB (page) aligned
	RegionSmallData = 2 // small file data, each stream 8-byte aligned
)

// Sizes of fixed structures.
const (
	commonHeaderSize     = 32
	filesystemHeaderSize = 72
	regionSetSize        = 24
	regionHeaderSize     = 40
	objectIDHeaderSize   = 48
	objectIDEntrySize    = 40
	filesystemSize       = 24
	ftDirEntrySize       = 16
	streamSize           = 16
	fileSizeV2           = 96  // File in format 2.x
	fileSizeV3           = 104 // File in format 3.x: 8 more bytes, not publicly described, written as zero
	filesPerTable        = 1024
	upcaseTableLength    = 0x10000
	linkTableHeaderSize  = 8
	pageSize             = 4096
	maxRegions           = 0x10000
	maxNameUnits         = 255
	maxPathUnits         = 0x7fff
	maxOffset            = 1<<48 - 1
)

// File flags (File.Flags); directory and reparse-point attributes are not
// stored as flags but derived from the default stream type and ReparseOffset.
const (
	flagReadOnly = 0x1
	flagHidden   = 0x2
	flagSystem   = 0x4
	flagArchive  = 0x8
	flagSparse   = 0x10
)

// FILE_ATTRIBUTE_* values.
const (
	AttrReadOnly     = 0x1
	AttrHidden       = 0x2
	AttrSystem       = 0x4
	AttrDirectory    = 0x10
	AttrArchive      = 0x20
	AttrSparseFile   = 0x200
	AttrReparsePoint = 0x400
)

// StoredAttributes is the subset of FILE_ATTRIBUTE_* bits a CIM can record:
// the five File flags plus the derived directory and reparse-point bits.
// Anything else a writer is given (NORMAL 0x80, NOT_CONTENT_INDEXED 0x2000, ...)
// is dropped, so comparisons with a layer must mask with StoredAttributes.
const StoredAttributes = AttrReadOnly | AttrHidden | AttrSystem | AttrDirectory | AttrArchive | AttrSparseFile | AttrReparsePoint

// AttributesAsStored returns the FILE_ATTRIBUTE_* bits a reader reports for
// an entry written with attributes a: the five stored flags plus the derived
// directory and reparse-point bits.
func AttributesAsStored(a uint32, isDir, isReparse bool) uint32 {
	a &= AttrReadOnly | AttrHidden | AttrSystem | AttrArchive | AttrSparseFile
	if isDir {
		a |= AttrDirectory
	}
	if isReparse {
		a |= AttrReparsePoint
	}
	return a
}

// Stream types (bits 48-55 of Stream.LengthAndType).
const (
	streamTypeData      = 0
	streamTypeLinkTable = 1
	streamTypePeImage   = 2
	streamSparseBit     = 1 << 56
)

// ErrFormat is wrapped by every error that reports a malformed CIM.
var ErrFormat = errdefs.New(errdefs.ErrInvalidArgument, "invalid CIM")

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// regionOffset addresses an object: region index in the top 16 bits, byte
// offset within that region file in the low 48. Zero is the null object.
type regionOffset uint64

func makeOffset(index int, off int64) regionOffset {
	return regionOffset(uint64(index)<<48 | uint64(off)&maxOffset)
}
func (o regionOffset) index() int     { return int(o >> 48) }
func (o regionOffset) offset() uint64 { return uint64(o) & maxOffset }

// version is a CIM format version.
type version struct{ Major, Minor uint32 }

func (v version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

func (v version) fileSize() int {
	if v.Major >= 3 {
		return fileSizeV3
	}
	return fileSizeV2
}

// commonHeader (32 bytes):
//
//	0  Magic        [8]byte "cimfile0"
//	8  HeaderLength u32     size of this file's fixed header (our choice, see docs)
//	12 Type         u8      0 image, 1 region, 2 objectid
//	13 reserved     [3]byte
//	16 Major, Minor u32, u32
//	24 reserved     u64
type commonHeader struct {
	HeaderLength uint32
	Type         uint8
	Version      version
}

func (h commonHeader) put(b []byte) {
	copy(b[0:8], magic[:])
	binary.LittleEndian.PutUint32(b[8:], h.HeaderLength)
	b[12] = h.Type
	binary.LittleEndian.PutUint32(b[16:], h.Version.Major)
	binary.LittleEndian.PutUint32(b[20:], h.Version.Minor)
}

func parseCommonHeader(b []byte, wantType uint8) (commonHeader, error) {
	var h commonHeader
	if len(b) < commonHeaderSize {
		return h, formatErr("header truncated (%d bytes)", len(b))
	}
	if [8]byte(b[0:8]) != magic {
		return h, formatErr("bad magic %q", b[0:8])
	}
	h.HeaderLength = binary.LittleEndian.Uint32(b[8:])
	h.Type = b[12]
	h.Version = version{binary.LittleEndian.Uint32(b[16:]), binary.LittleEndian.Uint32(b[20:])}
	if h.Version.Major < 2 || h.Version.Major > 3 {
		return h, formatErr("unsupported format version %s (supported 2.x-3.x)", h.Version)
	}
	if h.Type != wantType {
		return h, formatErr("file type %d, want %d", h.Type, wantType)
	}
	return h, nil
}

// regionSet (24 bytes): ID GUID(16) @0, Count u16 @16, reserved u16 @18, reserved u32 @20.
type regionSet struct {
	ID    GUID
	Count uint16
}

func (r regionSet) put(b []byte) {
	copy(b[0:16], r.ID[:])
	binary.LittleEndian.PutUint16(b[16:], r.Count)
}

func parseRegionSet(b []byte) regionSet {
	return regionSet{ID: GUID(b[0:16]), Count: binary.LittleEndian.Uint16(b[16:])}
}

// filesystemHeader (72 bytes) heads the .cim file:
//
//	0  commonHeader     (Type 0)
//	32 Regions          regionSet (this image's own regions)
//	56 FilesystemOffset regionOffset of the Filesystem object
//	64 reserved u32, 68 reserved u16
//	70 ParentCount      u16
//	72 ParentRegionSets [ParentCount]regionSet, oldest ancestor first
type filesystemHeader struct {
	Common           commonHeader
	Regions          regionSet
	FilesystemOffset regionOffset
	Parents          []regionSet
}

func (h *filesystemHeader) marshal() []byte {
	b := make([]byte, filesystemHeaderSize+regionSetSize*len(h.Parents))
	h.Common.put(b)
	h.Regions.put(b[32:])
	binary.LittleEndian.PutUint64(b[56:], uint64(h.FilesystemOffset))
	binary.LittleEndian.PutUint16(b[70:], uint16(len(h.Parents)))
	for i, p := range h.Parents {
		p.put(b[filesystemHeaderSize+i*regionSetSize:])
	}
	return b
}

// parseFilesystemHeader parses the fixed part; b must hold the parent sets too
// (the caller reads ParentCount first with parentCount).
func parseFilesystemHeader(b []byte) (*filesystemHeader, error) {
	c, err := parseCommonHeader(b, fileTypeImage)
	if err != nil {
		return nil, err
	}
	if len(b) < filesystemHeaderSize {
		return nil, formatErr("filesystem header truncated (%d bytes)", len(b))
	}
	h := &filesystemHeader{Common: c, Regions: parseRegionSet(b[32:]), FilesystemOffset: regionOffset(binary.LittleEndian.Uint64(b[56:]))}
	n := int(binary.LittleEndian.Uint16(b[70:]))
	if len(b) < filesystemHeaderSize+n*regionSetSize {
		return nil, formatErr("parent region sets truncated: %d declared", n)
	}
	for i := 0; i < n; i++ {
		h.Parents = append(h.Parents, parseRegionSet(b[filesystemHeaderSize+i*regionSetSize:]))
	}
	return h, nil
}

// regionHeader (40 bytes) heads each region_<guid>_<i> file:
//
//	0  commonHeader (Type 1)
//	32 Index u16, 34 Type u8 (RegionMetadata/Data/SmallData), 35 reserved u8, 36 reserved u32
func marshalRegionHeader(v version, index uint16, typ uint8) []byte {
	b := make([]byte, regionHeaderSize)
	commonHeader{HeaderLength: regionHeaderSize, Type: fileTypeRegion, Version: v}.put(b)
	binary.LittleEndian.PutUint16(b[32:], index)
	b[34] = typ
	return b
}

// objectIDHeader (48 bytes) heads each objectid_<guid>_<i> file:
//
//	0  commonHeader (Type 2)
//	32 Index u16, 34 Type u8, 35 reserved u8, 36 reserved u32
//	40 TableOffset u32, 44 Count u32
//	then Count entries {Length u64, Digest [24]byte, Offset u64} (40 bytes)
//
// The digest algorithm is not public, so this writer emits Count = 0 with
// TableOffset just past the header, and readers never need the entries.
func marshalObjectIDHeader(v version, index uint16, typ uint8) []byte {
	b := make([]byte, objectIDHeaderSize)
	commonHeader{HeaderLength: objectIDHeaderSize, Type: fileTypeObjectID, Version: v}.put(b)
	binary.LittleEndian.PutUint16(b[32:], index)
	b[34] = typ
	binary.LittleEndian.PutUint32(b[40:], objectIDHeaderSize)
	return b
}

// filesystem object (24 bytes), in a metadata region:
//
//	0  UpcaseTableOffset        regionOffset (0x10000 u16)
//	8  FileTableDirectoryOffset regionOffset
//	16 FileTableDirectoryLength u32 (entries)
//	20 RootDirectory            u32 FileID
type filesystem struct {
	Upcase     regionOffset
	FTDir      regionOffset
	FTDirCount uint32
	Root       uint32
}

func (f filesystem) marshal() []byte {
	b := make([]byte, filesystemSize)
	binary.LittleEndian.PutUint64(b[0:], uint64(f.Upcase))
	binary.LittleEndian.PutUint64(b[8:], uint64(f.FTDir))
	binary.LittleEndian.PutUint32(b[16:], f.FTDirCount)
	binary.LittleEndian.PutUint32(b[20:], f.Root)
	return b
}

func parseFilesystem(b []byte) filesystem {
	return filesystem{
		Upcase:     regionOffset(binary.LittleEndian.Uint64(b[0:])),
		FTDir:      regionOffset(binary.LittleEndian.Uint64(b[8:])),
		FTDirCount: binary.LittleEndian.Uint32(b[16:]),
		Root:       binary.LittleEndian.Uint32(b[20:]),
	}
}

// ftDirEntry (16 bytes): Offset regionOffset @0, Count u16 @8, EntrySize u16 @10, reserved u32 @12.
type ftDirEntry struct {
	Offset    regionOffset
	Count     uint16
	EntrySize uint16
}

func (e ftDirEntry) put(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], uint64(e.Offset))
	binary.LittleEndian.PutUint16(b[8:], e.Count)
	binary.LittleEndian.PutUint16(b[10:], e.EntrySize)
}

func parseFTDirEntry(b []byte) ftDirEntry {
	return ftDirEntry{regionOffset(binary.LittleEndian.Uint64(b[0:])), binary.LittleEndian.Uint16(b[8:]), binary.LittleEndian.Uint16(b[10:])}
}

// stream (16 bytes): DataOffset regionOffset @0, LengthAndType u64 @8
// (bits 0-47 length, 48-55 type, bit 56 sparse).
type stream struct {
	Offset        regionOffset
	LengthAndType uint64
}

func makeStream(off regionOffset, length int64, typ uint8, sparse bool) stream {
	lt := uint64(length)&maxOffset | uint64(typ)<<48
	if sparse {
		lt |= streamSparseBit
	}
	return stream{off, lt}
}
func (s stream) size() int64  { return int64(s.LengthAndType & maxOffset) }
func (s stream) typ() uint8   { return uint8(s.LengthAndType >> 48) }
func (s stream) sparse() bool { return s.LengthAndType&streamSparseBit != 0 }

func (s stream) put(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], uint64(s.Offset))
	binary.LittleEndian.PutUint64(b[8:], s.LengthAndType)
}

func parseStream(b []byte) stream {
	return stream{regionOffset(binary.LittleEndian.Uint64(b[0:])), binary.LittleEndian.Uint64(b[8:])}
}

// fileRecord is one File table entry (96 bytes in 2.x, 104 in 3.x):
//
//	0  Flags u16, 2 EaLength u16, 4 ReparseTag u32
//	8  CreationTime, 16 LastWriteTime, 24 ChangeTime, 32 LastAccessTime (FILETIME u64)
//	40 DefaultStream stream (data, or the directory's link table)
//	56 SdOffset, 64 EaOffset, 72 ReparseOffset, 80 StreamTableOffset (regionOffset)
//	88 ParentFileId u32, 92 BaseRegionIndex u16, 94 reserved u16
//	96 (3.x only) 8 bytes, meaning unknown, written as zero
type fileRecord struct {
	Flags         uint16
	EaLength      uint16
	ReparseTag    uint32
	Times         [4]int64 // creation, last write, change, last access
	DefaultStream stream
	SD, EA        regionOffset
	Reparse       regionOffset
	StreamTable   regionOffset
	ParentID      uint32
	BaseRegion    uint16
}

func (f *fileRecord) put(b []byte) {
	binary.LittleEndian.PutUint16(b[0:], f.Flags)
	binary.LittleEndian.PutUint16(b[2:], f.EaLength)
	binary.LittleEndian.PutUint32(b[4:], f.ReparseTag)
	for i, t := range f.Times {
		binary.LittleEndian.PutUint64(b[8+8*i:], uint64(t))
	}
	f.DefaultStream.put(b[40:])
	binary.LittleEndian.PutUint64(b[56:], uint64(f.SD))
	binary.LittleEndian.PutUint64(b[64:], uint64(f.EA))
	binary.LittleEndian.PutUint64(b[72:], uint64(f.Reparse))
	binary.LittleEndian.PutUint64(b[80:], uint64(f.StreamTable))
	binary.LittleEndian.PutUint32(b[88:], f.ParentID)
	binary.LittleEndian.PutUint16(b[92:], f.BaseRegion)
}

// parseFileRecord reads an entry of entrySize bytes; like the public reader it
// uses min(entrySize, 96) bytes and treats the rest as zero.
func parseFileRecord(b []byte) fileRecord {
	var full [fileSizeV2]byte
	copy(full[:], b)
	b = full[:]
	f := fileRecord{
		Flags:         binary.LittleEndian.Uint16(b[0:]),
		EaLength:      binary.LittleEndian.Uint16(b[2:]),
		ReparseTag:    binary.LittleEndian.Uint32(b[4:]),
		DefaultStream: parseStream(b[40:]),
		SD:            regionOffset(binary.LittleEndian.Uint64(b[56:])),
		EA:            regionOffset(binary.LittleEndian.Uint64(b[64:])),
		Reparse:       regionOffset(binary.LittleEndian.Uint64(b[72:])),
		StreamTable:   regionOffset(binary.LittleEndian.Uint64(b[80:])),
		ParentID:      binary.LittleEndian.Uint32(b[88:]),
		BaseRegion:    binary.LittleEndian.Uint16(b[92:]),
	}
	for i := range f.Times {
		f.Times[i] = int64(binary.LittleEndian.Uint64(b[8+8*i:]))
	}
	return f
}

func flagsFromAttributes(a uint32) uint16 {
	var f uint16
	if a&AttrReadOnly != 0 {
		f |= flagReadOnly
	}
	if a&AttrHidden != 0 {
		f |= flagHidden
	}
	if a&AttrSystem != 0 {
		f |= flagSystem
	}
	if a&AttrArchive != 0 {
		f |= flagArchive
	}
	if a&AttrSparseFile != 0 {
		f |= flagSparse
	}
	return f
}

func attributesFromRecord(f *fileRecord) uint32 {
	var a uint32
	if f.Flags&flagReadOnly != 0 {
		a |= AttrReadOnly
	}
	if f.Flags&flagHidden != 0 {
		a |= AttrHidden
	}
	if f.Flags&flagSystem != 0 {
		a |= AttrSystem
	}
	if f.Flags&flagArchive != 0 {
		a |= AttrArchive
	}
	if f.Flags&flagSparse != 0 {
		a |= AttrSparseFile
	}
	if f.DefaultStream.typ() == streamTypeLinkTable {
		a |= AttrDirectory
	}
	if f.Reparse != 0 {
		a |= AttrReparsePoint
	}
	return a
}

// Link tables (directories: entry = u32 FileID; stream tables: entry = stream):
//
//	0 Length u32 (bytes of the whole table), 4 Count u32
//	8 Count entries, then Count u32 name offsets (from the table start),
//	then names: u16 length in UTF-16 units + UTF-16LE text, each 2-aligned.
//
// Entries are sorted by the upcase comparison (see upcase.go).
type linkEntry struct {
	name  []uint16
	entry []byte // 4 or 16 bytes
}

func marshalLinkTable(entries []linkEntry, entrySize int) []byte {
	n := linkTableHeaderSize + len(entries)*(entrySize+4)
	for _, e := range entries {
		n += 2 + 2*len(e.name)
	}
	b := make([]byte, n)
	binary.LittleEndian.PutUint32(b[0:], uint32(n))
	binary.LittleEndian.PutUint32(b[4:], uint32(len(entries)))
	eo := linkTableHeaderSize
	no := eo + len(entries)*entrySize
	name := no + len(entries)*4
	for i, e := range entries {
		copy(b[eo+i*entrySize:], e.entry)
		binary.LittleEndian.PutUint32(b[no+4*i:], uint32(name))
		binary.LittleEndian.PutUint16(b[name:], uint16(len(e.name)))
		for j, u := range e.name {
			binary.LittleEndian.PutUint16(b[name+2+2*j:], u)
		}
		name += 2 + 2*len(e.name)
	}
	return b
}

// linkTable is a validated raw link table; names are decoded on demand so a
// lookup costs O(log n) name decodes.
type linkTable struct {
	b         []byte
	count     int
	entrySize int
}

// newLinkTable validates a link table's header: Length within the object,
// Count <= (Length-8)/(entrySize+4).
func newLinkTable(b []byte, entrySize int) (*linkTable, error) {
	if len(b) < linkTableHeaderSize {
		return nil, formatErr("link table of %d bytes", len(b))
	}
	length := binary.LittleEndian.Uint32(b[0:])
	count := binary.LittleEndian.Uint32(b[4:])
	if length < linkTableHeaderSize || uint64(length) > uint64(len(b)) {
		return nil, formatErr("link table length %d outside [8, %d]", length, len(b))
	}
	if uint64(count) > uint64(length-linkTableHeaderSize)/uint64(entrySize+4) {
		return nil, formatErr("link table count %d too large for length %d", count, length)
	}
	return &linkTable{b: b[:length], count: int(count), entrySize: entrySize}, nil
}

func (t *linkTable) entry(i int) []byte {
	o := linkTableHeaderSize + i*t.entrySize
	return t.b[o : o+t.entrySize]
}

// name returns entry i's name, checking its offset and length.
func (t *linkTable) name(i int) ([]uint16, error) {
	length := uint64(len(t.b))
	off := uint64(binary.LittleEndian.Uint32(t.b[linkTableHeaderSize+t.count*t.entrySize+4*i:]))
	if off+2 > length {
		return nil, formatErr("link table name offset %d outside table of %d bytes", off, length)
	}
	nl := uint64(binary.LittleEndian.Uint16(t.b[off:]))
	if nl == 0 || nl > maxNameUnits || off+2+nl*2 > length {
		return nil, formatErr("link table name of %d units at offset %d invalid in table of %d bytes", nl, off, length)
	}
	name := make([]uint16, nl)
	for j := range name {
		name[j] = binary.LittleEndian.Uint16(t.b[off+2+2*uint64(j):])
	}
	return name, nil
}

// entries decodes every entry in stored order.
func (t *linkTable) entries() ([]linkEntry, error) {
	out := make([]linkEntry, t.count)
	for i := range out {
		n, err := t.name(i)
		if err != nil {
			return nil, err
		}
		out[i] = linkEntry{name: n, entry: t.entry(i)}
	}
	return out, nil
}

// parseLinkTable validates a link table and returns its entries in stored order.
func parseLinkTable(b []byte, entrySize int) ([]linkEntry, error) {
	t, err := newLinkTable(b, entrySize)
	if err != nil {
		return nil, err
	}
	return t.entries()
}
