package cim

import (
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/upcase"
)

// TestWriterFoldIsUpcaseFold: the writer's key for "the same name" is
// upcase.Fold, the one the layers' merged view and fsview.Compare use, so a
// CIM has exactly as many entries as the view `cim verify` expects. (The
// table itself is tested in internal/upcase.)
func TestWriterFoldIsUpcaseFold(t *testing.T) {
	if &upcaseTable()[0] != &upcase.Table()[0] {
		t.Fatal("the writer's table is not upcase.Table")
	}
	for _, name := range append(append([]string{}, nameAlphabet...), "Files/I.txt", "\u0131.txt", "\u017fam", "\u00b5s", "\U00010428") {
		if got, want := foldKey(name, upcaseTable()), upcase.Fold(name); got != want {
			t.Errorf("foldKey(%q) = %q, upcase.Fold = %q", name, got, want)
		}
	}
}

// nameAlphabet holds characters whose case folding is tricky.
var nameAlphabet = []string{"a", "A", "ß", "ẞ", "ı", "I", "i", "ſ", "s", "S", "µ", "Μ", "😀", "𐐨", "𐐀", "\uFF41", "\uFF21", "é", "É", "_", "~", "ǅ", "ǆ", "Ǆ", "\uE000", "\uFFFD"}

// TestNameOrderProperty writes random names built from characters whose case
// folding is tricky and checks that the reader's binary search finds every
// spelling and that the later spelling of case-equal names wins.
func TestNameOrderProperty(t *testing.T) {
	alphabet := nameAlphabet
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
