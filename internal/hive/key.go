package hive

import (
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Layer is a key's layered-key semantics (nk byte 13, bits 0-1), used by
// container delta hives (regf 1.6, header flag FlagLayered).
type Layer uint8

const (
	// LayerNone merges the key with the one below: its values replace
	// same-named values, its subkeys merge.
	LayerNone Layer = 0
	// LayerTombstone deletes the key below, with its subtree.
	LayerTombstone Layer = 1
	// LayerSupersedeLocal replaces the values (and class) below, and still
	// merges subkeys.
	LayerSupersedeLocal Layer = 2
	// LayerSupersedeTree replaces the whole subtree below.
	LayerSupersedeTree Layer = 3
)

func (l Layer) String() string {
	switch l {
	case LayerNone:
		return "none"
	case LayerTombstone:
		return "tombstone"
	case LayerSupersedeLocal:
		return "supersede-local"
	case LayerSupersedeTree:
		return "supersede-tree"
	}
	return "unknown"
}

// Registry value types.
const (
	RegNone     = 0
	RegSZ       = 1
	RegExpandSZ = 2
	RegBinary   = 3
	RegDWORD    = 4
	RegLink     = 6
	RegMultiSZ  = 7
	RegQWORD    = 11
)

// Value is one registry value.
type Value struct {
	Name      string // "" is the key's default value
	Type      uint32
	Data      []byte
	Tombstone bool // layered: deletes the value below
}

// Key is one registry key. A key read from a hive loads its values and
// subkeys on first use (Load); a key built in memory has them set directly.
type Key struct {
	Name      string
	Class     string
	LastWrite uint64 // FILETIME: 100 ns ticks since 1601-01-01 UTC
	// Flags are the nk flags other than the name encoding (KeyHiveEntry,
	// KeyNoDelete, KeySymLink...). The writer sets KeyHiveEntry on the root
	// and clears it elsewhere.
	Flags        uint16
	AccessBits   uint8
	Layer        Layer
	InheritClass bool   // layered: take the class from the key below
	Security     []byte // self-relative security descriptor; nil: the parent's
	Values       []Value
	Subkeys      []*Key

	src    *Hive  // hive the values and subkeys load from; nil once loaded
	off    uint32 // nk cell offset in src
	nvals  uint32
	nsubs  uint32
	valOff uint32
	subOff uint32
	depth  int
}

// Loaded reports whether k's values and subkeys are in memory.
func (k *Key) Loaded() bool { return k.src == nil }

// Load reads k's values and subkeys from its hive if they are not in memory
// yet. Subkeys come back unloaded.
func (k *Key) Load() error {
	if k.src == nil {
		return nil
	}
	if err := k.src.loadChildren(k); err != nil {
		return err
	}
	k.src = nil
	return nil
}

// LoadAll loads k's whole subtree.
func (k *Key) LoadAll() error {
	if err := k.Load(); err != nil {
		return err
	}
	for _, s := range k.Subkeys {
		if err := s.LoadAll(); err != nil {
			return err
		}
	}
	return nil
}

// unload drops the values and subkeys of a key read from a hive, so a
// writer or dump walking a large hive keeps only the current path in memory.
func (k *Key) unload(h *Hive) {
	if h == nil {
		return
	}
	k.Values, k.Subkeys, k.src = nil, nil, h
}

// origin is the hive k loads from (nil for a key built in memory or loaded).
func (k *Key) origin() *Hive { return k.src }

// Subkey returns the direct subkey called name (case-insensitive), loading k.
func (k *Key) Subkey(name string) (*Key, error) {
	if err := k.Load(); err != nil {
		return nil, err
	}
	for _, s := range k.Subkeys {
		if compareNameStrings(s.Name, name) == 0 {
			return s, nil
		}
	}
	return nil, nil
}

// Time returns a FILETIME as a time.Time (UTC).
func Time(ft uint64) time.Time {
	const epochDiff = 116444736000000000 // 1601 -> 1970 in 100 ns
	if ft < epochDiff {
		return time.Unix(0, 0).UTC().Add(-time.Duration(epochDiff-ft) * 100)
	}
	return time.Unix(0, 0).UTC().Add(time.Duration(ft-epochDiff) * 100)
}

// FileTime converts t to a FILETIME.
func FileTime(t time.Time) uint64 {
	return uint64(t.UnixNano()/100) + 116444736000000000
}

// decodeName turns a stored name into a string: Latin-1 when compressed,
// UTF-16LE otherwise. Unpaired surrogates are kept as their 3-byte
// (WTF-8) encodings so encodeName gives back the stored code units.
func decodeName(b []byte, compressed bool) string {
	if compressed {
		if isASCII(b) {
			return string(b)
		}
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r)
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = le.Uint16(b[2*i:])
	}
	return string16(u)
}

// string16 converts UTF-16 code units to a string, keeping unpaired
// surrogates as WTF-8.
func string16(u []uint16) string {
	out := make([]byte, 0, len(u))
	for i := 0; i < len(u); i++ {
		c := rune(u[i])
		if utf16.IsSurrogate(c) {
			if c < 0xdc00 && i+1 < len(u) {
				if r := utf16.DecodeRune(c, rune(u[i+1])); r != utf8.RuneError {
					out = utf8.AppendRune(out, r)
					i++
					continue
				}
			}
			out = append(out, byte(0xe0|c>>12), byte(0x80|(c>>6)&0x3f), byte(0x80|c&0x3f))
			continue
		}
		out = utf8.AppendRune(out, c)
	}
	return string(out)
}

// encodeName converts a name to UTF-16 code units, the inverse of
// string16 (WTF-8 surrogates included).
func encodeName(s string) []uint16 {
	return appendName(make([]uint16, 0, len(s)), s)
}

// appendName is encodeName appending to u.
func appendName(u []uint16, s string) []uint16 {
	if isASCII(s) {
		for i := 0; i < len(s); i++ {
			u = append(u, uint16(s[i]))
		}
		return u
	}
	for i := 0; i < len(s); {
		if s[i] == 0xed && i+2 < len(s) && s[i+1] >= 0xa0 && s[i+1] <= 0xbf && s[i+2]&0xc0 == 0x80 {
			u = append(u, uint16(s[i]&0x0f)<<12|uint16(s[i+1]&0x3f)<<6|uint16(s[i+2]&0x3f))
			i += 3
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		if r >= 0x10000 {
			a, b := utf16.EncodeRune(r)
			u = append(u, uint16(a), uint16(b))
			continue
		}
		u = append(u, uint16(r))
	}
	return u
}

// compressible reports whether a name can be stored as Latin-1.
func compressible(u []uint16) bool {
	for _, c := range u {
		if c > 0xff {
			return false
		}
	}
	return true
}

func isASCII[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
