package upcase

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTable(t *testing.T) {
	up := Table()
	tests := []struct {
		in, want uint16
		why      string
	}{
		{'a', 'A', "ASCII"},
		{'z', 'Z', "ASCII"},
		{'A', 'A', "already upper"},
		{0xe9, 0xc9, "é -> É"},
		{0xff, 0x178, "ÿ -> Ÿ"},
		{0x3c3, 0x3a3, "σ -> Σ"},
		{0x3c2, 0x3a3, "final ς -> Σ"},
		{0x430, 0x410, "Cyrillic а -> А"},
		{0xff41, 0xff21, "fullwidth a -> A"},
		{0x131, 0x131, "dotless ı must not become ASCII I"},
		{0x17f, 0x17f, "long ſ must not become ASCII S"},
		{0xb5, 0xb5, "micro sign kept"},
		{0x345, 0x345, "combining ypogegrammeni kept"},
		{0xdf, 0xdf, "ß has no simple upper case"},
		{0xd83d, 0xd83d, "high surrogate"},
		{0xde00, 0xde00, "low surrogate"},
	}
	for _, tt := range tests {
		if got := up[tt.in]; got != tt.want {
			t.Errorf("upcase[%#x] = %#x, want %#x (%s)", tt.in, got, tt.want, tt.why)
		}
	}
	// Idempotent: an upcased character upcases to itself, so the comparison
	// is an equivalence.
	for c, u := range up {
		if up[u] != u {
			t.Errorf("upcase not idempotent at %#x: %#x -> %#x", c, u, up[u])
		}
	}
}

func TestFold(t *testing.T) {
	tests := []struct{ in, want, why string }{
		{"Files/a.TXT", "FILES/A.TXT", "ASCII, a path"},
		{"FILES", "FILES", "nothing to change"},
		{"r\u00e9sum\u00e9", "R\u00c9SUM\u00c9", "Latin-1"},
		{"\u65e5\u672c", "\u65e5\u672c", "no case"},
		{"\u0131.txt", "\u0131.TXT", "dotless i stays (strings.ToUpper gives I)"},
		{"\u017fam", "\u017fAM", "long s stays (strings.ToUpper gives S)"},
		{"\u00b5s", "\u00b5S", "micro sign stays (strings.ToUpper gives Greek Mu)"},
		{"\U00010428", "\U00010428", "outside the BMP: left alone (strings.ToUpper gives U+10400)"},
		{"a\xffb\xc3", "A\xffB\xc3", "invalid UTF-8 bytes kept"},
		{"", "", "empty"},
	}
	for _, tt := range tests {
		if got := Fold(tt.in); got != tt.want {
			t.Errorf("Fold(%q) = %q, want %q (%s)", tt.in, got, tt.want, tt.why)
		}
	}
	// Fold is the table, character by character.
	for c := rune(0); c < Length; c++ {
		if c >= 0xd800 && c < 0xe000 {
			continue
		}
		if got, want := Fold(string(c)), string(Rune(c)); got != want {
			t.Fatalf("Fold(%U) = %q, want the table's %q", c, got, want)
		}
	}
}

// TestEqualIsFold checks Equal against its definition on random names made
// of characters whose case is tricky, and bytes that are not UTF-8.
func TestEqualIsFold(t *testing.T) {
	alphabet := []string{"a", "A", "z", "Z", "/", ".", "ß", "ı", "I", "i", "ſ", "s", "S", "µ", "Μ", "𐐨", "𐐀", "\uFF41", "\uFF21", "é", "É", "\xff", "\xc3"}
	rng := rand.New(rand.NewPCG(1, 2))
	name := func() string {
		var sb strings.Builder
		for n := rng.IntN(6); n > 0; n-- {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return sb.String()
	}
	same := 0
	for i := 0; i < 20000; i++ {
		a, b := name(), name()
		if rng.IntN(2) == 0 {
			b = strings.ToUpper(a) // often the same name, sometimes not (ı, ſ, µ)
		}
		want := Fold(a) == Fold(b)
		if got := Equal(a, b); got != want {
			t.Fatalf("Equal(%q, %q) = %v, Fold gives %q and %q", a, b, got, Fold(a), Fold(b))
		}
		if want {
			same++
		}
	}
	if same == 0 {
		t.Fatal("no pair was the same name: the test checks nothing")
	}
}

// FuzzFold holds Fold and Equal to their definitions on arbitrary bytes:
// Equal is Fold equality, and Fold is idempotent and keeps valid UTF-8 valid.
func FuzzFold(f *testing.F) {
	f.Add("Files/I.txt", "files/\u0131.TXT")
	f.Add("\u017fam", "SAM")
	f.Add("a\xffb", "A\xffB")
	f.Add("\U00010428", "\U00010400")
	f.Fuzz(func(t *testing.T, a, b string) {
		fa, fb := Fold(a), Fold(b)
		if got := Equal(a, b); got != (fa == fb) {
			t.Fatalf("Equal(%q, %q) = %v, folds %q and %q", a, b, got, fa, fb)
		}
		if Fold(fa) != fa {
			t.Fatalf("Fold not idempotent on %q: %q then %q", a, fa, Fold(fa))
		}
		if utf8.ValidString(a) && !utf8.ValidString(fa) {
			t.Fatalf("Fold(%q) = %q is not valid UTF-8", a, fa)
		}
	})
}
