package hive

import (
	"strings"
	"testing"
)

// TestNameStrings checks that the string forms of the name comparison and
// the lh hash agree with the UTF-16 ones, ASCII fast path or not.
func TestNameStrings(t *testing.T) {
	names := []string{
		"", "a", "A", "b", "ab", "AB", "aB", "a_", "a[", "Key", "KEY1", "key10", "key2",
		"é", "É", "aé", "AÉ", "ae", "aÿ", "aŸ", "ß", "a\u00df", "Ä", "a\u0100", "a\u0101",
		"\U0001F600", "a\U0001F600", "a\uffff", "a\ued00", "x\xed\xa0\x80", "X\xed\xa0\x80y",
	}
	for _, a := range names {
		if got, want := lhHashString(a), lhHash(encodeName(a)); got != want {
			t.Errorf("lhHashString(%q) = %#x, lhHash = %#x", a, got, want)
		}
		for _, b := range names {
			got, want := compareNameStrings(a, b), compareNames(encodeName(a), encodeName(b))
			if got != want {
				t.Errorf("compareNameStrings(%q, %q) = %d, compareNames = %d", a, b, got, want)
			}
			if eq := equalFold(a, b); eq != (want == 0) {
				t.Errorf("equalFold(%q, %q) = %v", a, b, eq)
			}
		}
	}
}

// TestWriteRefusesDuplicateNames: two subkeys or two values whose names
// differ only in case, whether the subkeys come sorted or not.
func TestWriteRefusesDuplicateNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		root *Key
		want string
	}{
		{"sorted subkeys", key("", sub(key("a"), key("B"), key("b"), key("c"))), `two subkeys named "b"`},
		{"unsorted subkeys", key("", sub(key("c"), key("B"), key("a"), key("b"))), `two subkeys named "b"`},
		{"non-ASCII subkeys", key("", sub(key("é"), key("x"), key("É"))), `two subkeys named "É"`},
		{"values", key("", dword("Ab", 1), dword("x", 2), dword("aB", 3)), `two values named "aB"`},
	} {
		_, err := Marshal(tc.root)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %s", tc.name, err, tc.want)
		}
	}
	ok := key("", sub(key("b"), key("a"), key("c")), dword("a", 1), dword("b", 2))
	if _, err := Marshal(ok); err != nil {
		t.Errorf("distinct names: %v", err)
	}
}
