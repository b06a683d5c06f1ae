package cim

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/cimconv/cimconv/internal/upcase"
)

// GUID is a region-set ID in its on-disk (Windows, little-endian fields) byte
// order: Data1 u32, Data2 u16, Data3 u16, Data4 [8]byte.
type GUID [16]byte

// String formats g like go-winio's guid.GUID.String(): lowercase, no braces.
// Region and objectid file names are built from it.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

// upcaseTable is the table the writer stores in every image; names are
// compared (and link tables sorted) through it. It is the project's one
// definition of the same name (internal/upcase, where it is built and its
// departures from Unicode's mappings are explained); the reader uses the
// table stored in the image it reads instead.
var upcaseTable = upcase.Table

// foldKey returns the sort/compare key of a name: each BMP character upcased
// through table, supplementary characters as their code points, encoded as
// UTF-8 so that Go string order equals the code-point order the reader's
// binary search uses (surrogate pairs compare above every BMP character).
func foldKey(name string, table []uint16) string {
	var sb strings.Builder
	sb.Grow(len(name))
	for _, r := range name {
		if r < upcaseTableLength {
			r = rune(table[r])
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// foldKey16 is foldKey for a UTF-16 name as stored in a link table. Unpaired
// surrogates are kept as their code unit values so a corrupt name still
// compares deterministically.
func foldKey16(name []uint16, table []uint16) string {
	var sb strings.Builder
	sb.Grow(len(name))
	for i := 0; i < len(name); i++ {
		r := rune(name[i])
		if utf16.IsSurrogate(r) && i+1 < len(name) {
			if d := utf16.DecodeRune(r, rune(name[i+1])); d != utf8.RuneError {
				sb.WriteRune(d)
				i++
				continue
			}
		}
		r = rune(table[r])
		if utf16.IsSurrogate(r) {
			// Not valid UTF-8 on its own: write the code unit as raw 3-byte
			// sequence so ordering stays by code unit.
			sb.WriteByte(byte(0xe0 | r>>12))
			sb.WriteByte(byte(0x80 | (r>>6)&0x3f))
			sb.WriteByte(byte(0x80 | r&0x3f))
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// checkName validates one path component.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty path component")
	case name == "." || name == "..":
		return fmt.Errorf("path component %q not allowed", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("path component %q is not valid UTF-8", name)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("path component %q contains NUL", name)
	}
	if n := utf16Len(name); n > maxNameUnits {
		return fmt.Errorf("path component %.40q... is %d UTF-16 units long (max %d)", name, n, maxNameUnits)
	}
	return nil
}

// toUTF16 encodes a validated name.
func toUTF16(s string) []uint16 {
	u := make([]uint16, 0, len(s))
	for _, r := range s {
		u = utf16.AppendRune(u, r)
	}
	return u
}

func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n++
		if r >= 0x10000 {
			n++
		}
	}
	return n
}

// splitPath splits a '/' or '\' separated path relative to the root into
// components, ignoring empty components (leading, trailing or doubled
// separators). The empty path is the root.
func splitPath(p string) ([]string, error) {
	if len(p) > maxPathUnits*3 || utf16Len(p) > maxPathUnits {
		return nil, fmt.Errorf("path %.60q... longer than %d UTF-16 units", p, maxPathUnits)
	}
	parts := strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' })
	for _, c := range parts {
		if err := checkName(c); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// Upcase maps one UTF-16 code unit to its upper case through the same table
// the CIM writer stores in every image (upcase.Table). Other byte formats
// that sort names the Windows way (registry hive subkey lists, see
// internal/hive) use it so the project has one table.
func Upcase(c uint16) uint16 { return upcaseTable()[c] }

// UpcaseTable is that table, indexed by UTF-16 code unit, for loops over many
// code units (Upcase fetches it on every call). It is shared: do not modify it.
func UpcaseTable() []uint16 { return upcaseTable() }
