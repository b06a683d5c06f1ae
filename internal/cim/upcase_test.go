package cim

import (
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestUpcaseTable(t *testing.T) {
	up := upcaseTable()
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

// TestNameOrderProperty writes random names built from characters whose case
// folding is tricky and checks that the reader's binary search finds every
// spelling and that the later spelling of case-equal names wins.
func TestNameOrderProperty(t *testing.T) {
	alphabet := []string{"a", "A", "ß", "ẞ", "ı", "I", "i", "ſ", "s", "S", "µ", "Μ", "😀", "𐐨", "𐐀", "\uFF41", "\uFF21", "é", "É", "_", "~", "ǅ", "ǆ", "Ǆ", "\uE000", "\uFFFD"}
	rng := rand.New(rand.NewPCG(7, 8))
	dir := t.TempDir()
	w, err := Create(dir, "names")
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]string{} // fold key -> latest spelling
	var all []string
	for i := 0; i < 3000; i++ {
		var sb strings.Builder
		for n := 1 + rng.IntN(5); n > 0; n-- {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		name := sb.String()
		mustAddFile(t, w, name, fileInfo(0, nil), []byte(name))
		last[foldKey(name, upcaseTable())] = name
		all = append(all, name)
	}
	mustCommit(t, w)
	im := mustOpen(t, filepath.Join(dir, "names.cim"))
	ents, err := im.ReadDir("")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(last) {
		t.Fatalf("%d entries, want %d distinct names", len(ents), len(last))
	}
	keys := make([]string, 0, len(last))
	for k := range last {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if ents[i].Name != last[k] {
			t.Fatalf("entry %d = %q, want %q", i, ents[i].Name, last[k])
		}
	}
	for _, n := range all {
		r, err := im.Open(n)
		if err != nil {
			t.Fatalf("lookup %q: %v", n, err)
		}
		want := last[foldKey(n, upcaseTable())]
		if got := string(readAll(t, r)); got != want {
			t.Errorf("lookup %q read %q, want the latest spelling's data %q", n, got, want)
		}
	}
}
