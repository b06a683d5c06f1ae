package hive

import "testing"

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
