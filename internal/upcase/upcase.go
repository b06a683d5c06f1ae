package upcase

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// Length is the number of entries of the table: one per UTF-16 code unit.
const Length = 0x10000

// table maps each BMP code unit to its upper case.
//
// It is built from Go's simple Unicode upper-case mappings (unicode.ToUpper)
// with these exceptions, chosen to stay close to the Windows table as
// described publicly by ntfs-3g's default $UpCase builder:
//   - surrogate code units (D800-DFFF) map to themselves;
//   - a mapping whose result is outside the BMP is dropped;
//   - non-ASCII characters never map to ASCII (U+0131 dotless i, U+017F long s),
//     and U+00B5 MICRO SIGN and U+0345 stay themselves, as ntfs-3g describes
//     Windows' table (not observed on Windows here).
//
// Not validated against a table written by CimFS.dll.
var table = sync.OnceValue(func() []uint16 {
	t := make([]uint16, Length)
	for c := range t {
		t[c] = uint16(c)
		if c >= 0xd800 && c < 0xe000 {
			continue
		}
		u := unicode.ToUpper(rune(c))
		if u > 0xffff || (c >= 0x80 && u < 0x80) || c == 0xb5 || c == 0x345 {
			continue
		}
		t[c] = uint16(u)
	}
	return t
})

// Table is the upcase table, indexed by UTF-16 code unit: what the CIM
// writer stores in every image. It is shared: do not modify it.
func Table() []uint16 { return table() }

// Rune upcases r through the table. Characters outside the BMP are left as
// they are (the table, like Windows', covers the BMP only).
func Rune(r rune) rune {
	if r >= 0 && r < Length {
		return rune(table()[r])
	}
	return r
}

// Fold returns the key names are compared by: s with every BMP character
// upcased through the table and every other character as it is. It works
// on whole '/'-separated paths too ('/' folds to itself). Bytes that are not
// valid UTF-8 are kept as they are, so two different invalid names stay
// different. Two names are the same name exactly when their folds are equal.
func Fold(s string) string {
	// Most names of a Windows layer are ASCII and many are upper case
	// already: return s itself when nothing changes.
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || 'a' <= c && c <= 'z' {
			break
		}
	}
	if i == len(s) {
		return s
	}
	t := table()
	b := make([]byte, i, len(s)+utf8.UTFMax)
	copy(b, s[:i])
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			b = append(b, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, c)
			i++
			continue
		}
		if r < Length {
			r = rune(t[r])
		}
		b = utf8.AppendRune(b, r)
		i += n
	}
	return string(b)
}

// Equal reports whether a and b are the same name: Fold(a) == Fold(b).
func Equal(a, b string) bool {
	if len(a) == len(b) {
		ascii := true
		for i := 0; i < len(a) && ascii; i++ {
			ca, cb := a[i], b[i]
			if ca >= utf8.RuneSelf || cb >= utf8.RuneSelf {
				ascii = false
				break
			}
			if 'a' <= ca && ca <= 'z' {
				ca -= 'a' - 'A'
			}
			if 'a' <= cb && cb <= 'z' {
				cb -= 'a' - 'A'
			}
			if ca != cb {
				return false
			}
		}
		if ascii {
			return true
		}
	}
	return Fold(a) == Fold(b)
}
