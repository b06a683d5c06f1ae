package hive

import (
	"cmp"
	"encoding/binary"

	"github.com/cimconv/cimconv/internal/cim"
)

// Base block (file header), 4096 bytes. Offsets from the msuhanov "Windows
// registry file format specification" (see docs/hive-format.md).
const (
	headerSize      = 4096
	hdrSignature    = 0   // "regf"
	hdrSeq1         = 4   // primary sequence number
	hdrSeq2         = 8   // secondary sequence number (equal when clean)
	hdrTimestamp    = 12  // FILETIME of the last write
	hdrMajor        = 20  // 1
	hdrMinor        = 24  // 3..6
	hdrFileType     = 28  // 0: primary file
	hdrFileFormat   = 32  // 1: direct memory load
	hdrRootCell     = 36  // offset of the root key's nk cell
	hdrBinsSize     = 40  // bytes of hive bins after the base block
	hdrClustering   = 44  // 1
	hdrFileName     = 48  // 64 bytes of UTF-16LE, informational
	hdrFileNameLen  = 64  //
	hdrFlags        = 144 // bit 0: pending reorganization, bit 1: layered keys
	hdrChecksum     = 508 // XOR-32 of the first 508 bytes
	hdrChecksumSpan = 508

	// FlagLayered marks a hive that may hold layered keys (a container delta).
	FlagLayered = 0x2

	binHeaderSize = 32
	binAlign      = 4096
	// Hive bin header fields.
	binSignature = 0  // "hbin"
	binOffset    = 4  // offset of this bin from the first bin
	binSize      = 8  // multiple of 4096
	binTimestamp = 20 // only meaningful in the first bin
)

// Key node (nk) fields, relative to the cell data (after the 4-byte size).
const (
	nkSignature      = 0
	nkFlags          = 2
	nkLastWrite      = 4
	nkAccessBits     = 12
	nkLayer          = 13 // layered-key bit fields (regf 1.6)
	nkParent         = 16
	nkSubkeys        = 20
	nkVolSubkeys     = 24
	nkSubkeyList     = 28
	nkVolSubkeyList  = 32
	nkValues         = 36
	nkValueList      = 40
	nkSecurity       = 44
	nkClass          = 48
	nkMaxSubkeyName  = 52 // low 16 bits; bits 16-31 are virtualization/user/debug flags
	nkMaxSubkeyClass = 56
	nkMaxValueName   = 60
	nkMaxValueData   = 64
	nkWorkVar        = 68
	nkNameLen        = 72
	nkClassLen       = 74
	nkFixed          = 76
)

// Key node flags.
const (
	KeyVolatile  = 0x0001
	KeyHiveExit  = 0x0002
	KeyHiveEntry = 0x0004 // the root key
	KeyNoDelete  = 0x0008
	KeySymLink   = 0x0010
	keyCompName  = 0x0020 // name stored as Latin-1; the writer decides
)

// Layered-key bit fields (nk byte 13): bits 0-1 layer semantics, bit 7
// inherit class.
const (
	layerSemanticsMask = 0x03
	layerInheritClass  = 0x80
)

// Value (vk) fields.
const (
	vkSignature = 0
	vkNameLen   = 2
	vkDataSize  = 4 // bit 31: data stored in the data-offset field
	vkData      = 8
	vkType      = 12
	vkFlags     = 16
	vkFixed     = 20

	vkCompName     = 0x0001
	vkTombstone    = 0x0002
	dataResident   = 0x80000000
	residentMax    = 4
	bigDataSegment = 16344 // bytes of data per db segment; db above this size
)

// Security (sk) fields.
const (
	skSignature = 0
	skFlink     = 4
	skBlink     = 8
	skRefCount  = 12
	skSize      = 16
	skFixed     = 20
)

const (
	noCell      = 0xffffffff
	maxDepth    = 512 // Windows' key depth limit
	maxNameLen  = 255 // characters, key names
	maxValueLen = 16383
	// maxLeaf is the number of subkeys per lh leaf before a list is split
	// under an ri index root: 511 8-byte elements fill one 4 KiB page.
	maxLeaf = 511
)

var le = binary.LittleEndian

// checksum is the base block checksum: XOR of the first 127 dwords, with 0
// and 0xffffffff remapped as Windows does.
func checksum(h []byte) uint32 {
	var x uint32
	for i := 0; i < hdrChecksumSpan; i += 4 {
		x ^= le.Uint32(h[i:])
	}
	switch x {
	case 0:
		return 1
	case 0xffffffff:
		return 0xfffffffe
	}
	return x
}

// lhHash is the lh list element hash: h = 37*h + upcase(c) over the name's
// UTF-16 code units.
func lhHash(name []uint16) uint32 {
	var h uint32
	up := cim.UpcaseTable()
	for _, c := range name {
		h = 37*h + uint32(up[c])
	}
	return h
}

// lhHashString is lhHash of a decoded name; an ASCII name is hashed without
// converting it to UTF-16.
func lhHashString(s string) uint32 {
	if !isASCII(s) {
		return lhHash(encodeName(s))
	}
	var h uint32
	up := cim.UpcaseTable()
	for i := 0; i < len(s); i++ {
		h = 37*h + uint32(up[s[i]])
	}
	return h
}

// compareNameStrings is compareNames of two decoded names. While both are
// ASCII, a byte is a UTF-16 code unit, so only names that differ after a
// shared ASCII prefix at a non-ASCII character are converted to UTF-16.
func compareNameStrings(a, b string) int {
	up := cim.UpcaseTable()
	for i := range min(len(a), len(b)) {
		if a[i] >= 0x80 || b[i] >= 0x80 {
			return compareNames(encodeName(a), encodeName(b))
		}
		if x, y := up[a[i]], up[b[i]]; x != y {
			return cmp.Compare(x, y)
		}
	}
	// One is an ASCII prefix of the other: the longer one has more code
	// units too.
	return cmp.Compare(len(a), len(b))
}

// compareKeys orders keys by name, as compareNames.
func compareKeys(a, b *Key) int { return compareNameStrings(a.Name, b.Name) }

// compareNames orders two UTF-16 names as Windows orders subkey lists: code
// unit by code unit after upcasing, a prefix first.
func compareNames(a, b []uint16) int {
	up := cim.UpcaseTable()
	for i := range min(len(a), len(b)) {
		if x, y := up[a[i]], up[b[i]]; x != y {
			return cmp.Compare(x, y)
		}
	}
	return cmp.Compare(len(a), len(b))
}
