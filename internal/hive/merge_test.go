package hive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// mergeBytes writes base flat and delta layered, reads both back and merges
// them, returning the merged hive's bytes: every merge test goes through the
// real format on both sides.
func mergeBytes(t testing.TB, base *Key, deltas ...*Key) []byte {
	t.Helper()
	b, err := Marshal(base)
	if err != nil {
		t.Fatalf("write base: %v", err)
	}
	broot := rootOf(t, b)
	var droots []*Key
	for _, d := range deltas {
		db, err := Marshal(d, WithLayered())
		if err != nil {
			t.Fatalf("write delta: %v", err)
		}
		droots = append(droots, rootOf(t, db))
	}
	m, err := Merge(context.Background(), broot, droots)
	if err != nil {
		t.Fatalf("merge: %v", err)
	}
	out, err := Marshal(m)
	if err != nil {
		t.Fatalf("write merged: %v", err)
	}
	if err := Check(out); err != nil {
		t.Fatalf("merged hive fails the strict check: %v", err)
	}
	return out
}

func readDump(t testing.TB, b []byte) []DumpKey {
	t.Helper()
	root, err := ReadTree(b)
	if err != nil {
		t.Fatal(err)
	}
	return dumpTree(t, root)
}

func diffDumps(got, want []DumpKey) string {
	var sb strings.Builder
	for i := 0; i < len(got) || i < len(want); i++ {
		var g, w any = "(none)", "(none)"
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if !reflect.DeepEqual(g, w) {
			fmt.Fprintf(&sb, "key %d:\n  got  %+v\n  want %+v\n", i, g, w)
			if sb.Len() > 4000 {
				break
			}
		}
	}
	return sb.String()
}

const (
	t1 = 133000000000000000
	t2 = 133100000000000000
	t3 = 133200000000000000
)

type mergeCase struct {
	name   string
	base   *Key
	deltas []*Key
	want   *Key
}

// mergeCases are the synthetic base+delta pairs, one per merge rule, each
// with its hand-written expected tree.
func mergeCases() []mergeCase {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48,000 bytes: db
	bigger := bytes.Repeat([]byte{0xa5}, 70000)
	many := func(prefix string, n, step int) []*Key {
		var ks []*Key
		for i := 0; i < n; i++ {
			ks = append(ks, key(fmt.Sprintf("%s%05d", prefix, i*step), at(t1), dword("i", uint32(i*step))))
		}
		return ks
	}
	return []mergeCase{
		{
			name:   "tombstone key deletes the subtree",
			base:   key("ROOT", sub(key("A", sub(key("B", sub(key("C"))))), key("Keep"))),
			deltas: []*Key{key("ROOT", sub(key("A", layer(LayerTombstone))))},
			want:   key("ROOT", sub(key("Keep"))),
		},
		{
			name:   "tombstone key with nothing below vanishes",
			base:   key("ROOT", sub(key("Keep"))),
			deltas: []*Key{key("ROOT", sub(key("Gone", layer(LayerTombstone), sub(key("Child")))))},
			want:   key("ROOT", sub(key("Keep"))),
		},
		{
			name:   "tombstone value deletes the value below",
			base:   key("ROOT", sub(key("A", sz("x", "1"), sz("y", "2"), dword("z", 3)))),
			deltas: []*Key{key("ROOT", sub(key("A", inherit(), tombVal("Y"), tombVal("absent"))))},
			want:   key("ROOT", sub(key("A", sz("x", "1"), dword("z", 3)))),
		},
		{
			name: "delta value replaces in place, new values append",
			base: key("ROOT", sub(key("A", sz("one", "1"), sz("two", "2"), sz("three", "3")))),
			deltas: []*Key{key("ROOT", sub(key("A", inherit(),
				sz("new", "n"), dword("TWO", 22)))),
			},
			want: key("ROOT", sub(key("A", sz("one", "1"), dword("TWO", 22), sz("three", "3"), sz("new", "n")))),
		},
		{
			name: "supersede-local replaces values and class, merges subkeys",
			base: key("ROOT", sub(key("A", class("old"), sz("x", "1"), sz("y", "2"),
				sub(key("S1", sz("s", "1")), key("S2"))))),
			deltas: []*Key{key("ROOT", sub(key("A", layer(LayerSupersedeLocal), class("new"), sz("z", "3"),
				sub(key("S2", sz("t", "2")), key("S3")))))},
			want: key("ROOT", sub(key("A", class("new"), sz("z", "3"),
				sub(key("S1", sz("s", "1")), key("S2", sz("t", "2")), key("S3"))))),
		},
		{
			name: "supersede-local with inherit class keeps the class below",
			base: key("ROOT", sub(key("A", class("kept"), sz("x", "1")))),
			deltas: []*Key{key("ROOT", sub(key("A", layer(LayerSupersedeLocal), inherit(), class("ignored"),
				tombVal("nothing"))))},
			want: key("ROOT", sub(key("A", class("kept")))),
		},
		{
			name: "supersede-tree replaces the subtree",
			base: key("ROOT", sub(key("A", class("c"), sz("x", "1"), sub(key("Old", sub(key("Deep"))), key("Same", sz("a", "1")))))),
			deltas: []*Key{key("ROOT", sub(key("A", layer(LayerSupersedeTree), sz("y", "2"),
				sub(key("Same", sz("b", "2")), key("New"), key("Dead", layer(LayerTombstone)), key("V", tombVal("v")))))),
			},
			want: key("ROOT", sub(key("A", sz("y", "2"), sub(key("New"), key("Same", sz("b", "2")), key("V"))))),
		},
		{
			name: "supersede-tree with inherit class takes classes from below",
			base: key("ROOT", sub(key("A", class("top"), sub(key("B", class("inner")))))),
			deltas: []*Key{key("ROOT", sub(key("A", layer(LayerSupersedeTree), inherit(),
				sub(key("B", inherit()), key("C", inherit())))))},
			want: key("ROOT", sub(key("A", class("top"), sub(key("B", class("inner")), key("C"))))),
		},
		{
			name:   "no inherit class: the delta's class applies, even empty",
			base:   key("ROOT", sub(key("A", class("below")), key("B", class("below")))),
			deltas: []*Key{key("ROOT", sub(key("A", class("above")), key("B")))},
			want:   key("ROOT", sub(key("A", class("above")), key("B"))),
		},
		{
			name:   "last write: the newer of the two",
			base:   key("ROOT", at(t1), sub(key("Old", at(t1)), key("New", at(t3)))),
			deltas: []*Key{key("ROOT", inherit(), at(t2), sub(key("Old", inherit(), at(t2)), key("New", inherit(), at(t2))))},
			want:   key("ROOT", at(t2), sub(key("New", at(t3)), key("Old", at(t2)))),
		},
		{
			name: "names match case-insensitively; the base's spelling stays",
			base: key("ROOT", sub(key("Software", sub(key("Microsoft", sz("Ver", "1")))))),
			deltas: []*Key{key("ROOT", sub(key("SOFTWARE", inherit(), sub(key("microsoft", inherit(),
				sz("VER", "2"), sub(key("windows"))))))),
			},
			want: key("ROOT", sub(key("Software", sub(key("Microsoft", sz("VER", "2"), sub(key("windows"))))))),
		},
		{
			name: "non-ASCII names fold through the Windows table",
			base: key("ROOT", sub(key("straße", sz("ключ", "a")), key("Ключ"), key("ǅ"), key("😀x"))),
			deltas: []*Key{key("ROOT", sub(key("STRASSE"), key("STRAßE", inherit(), sz("КЛЮЧ", "b")),
				key("ключ", layer(LayerTombstone)), key("😀X", inherit(), sz("e", "1")), key("ǆ", layer(LayerTombstone))))},
			want: key("ROOT", sub(key("STRASSE"), key("straße", sz("КЛЮЧ", "b")), key("😀x", sz("e", "1")))),
		},
		{
			name:   "big values (db) replace and survive",
			base:   key("ROOT", sub(key("A", val("blob", RegBinary, big), val("keep", RegBinary, bigger)))),
			deltas: []*Key{key("ROOT", sub(key("A", inherit(), val("BLOB", RegBinary, bigger[:20000]), val("more", RegBinary, big))))},
			want:   key("ROOT", sub(key("A", val("BLOB", RegBinary, bigger[:20000]), val("keep", RegBinary, bigger), val("more", RegBinary, big)))),
		},
		{
			name:   "more than 1,000 subkeys on both sides (ri lists)",
			base:   key("ROOT", sub(key("Many", sub(many("k", 1200, 2)...)))),
			deltas: []*Key{key("ROOT", sub(key("Many", inherit(), sub(append(many("k", 1200, 3), key("k00000", layer(LayerTombstone)))[1:]...))))},
			want: func() *Key {
				byName := map[string]*Key{}
				for _, k := range many("k", 1200, 2) {
					byName[k.Name] = k
				}
				for _, k := range many("k", 1200, 3)[1:] {
					byName[k.Name] = k
				}
				delete(byName, "k00000")
				m := key("Many")
				for _, k := range byName {
					m.Subkeys = append(m.Subkeys, k)
				}
				return key("ROOT", sub(m))
			}(),
		},
		{
			name: "several deltas apply in order",
			base: key("ROOT", sub(key("A", sz("v", "0")))),
			deltas: []*Key{
				key("ROOT", sub(key("A", inherit(), sz("v", "1")), key("B", sz("b", "1")))),
				key("ROOT", sub(key("A", layer(LayerTombstone)), key("B", inherit(), sz("b", "2")))),
			},
			want: key("ROOT", sub(key("B", sz("b", "2")))),
		},
		{
			name:   "the base root's name stays",
			base:   key("CMI-CreateHive{1}", sub(key("A"))),
			deltas: []*Key{key("ROOT", sub(key("B")))},
			want:   key("CMI-CreateHive{1}", sub(key("A"), key("B"))),
		},
	}
}

func TestMergeRules(t *testing.T) {
	tests := mergeCases()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mergeBytes(t, tt.base, tt.deltas...)
			want, err := Marshal(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffDumps(readDump(t, got), readDump(t, want)); d != "" {
				t.Fatalf("merged tree differs from the expected tree:\n%s", d)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("same tree, different bytes (%d vs %d)", len(got), len(want))
			}
		})
	}
}

// The descriptor of a key on both sides is the delta's, or the base's with
// SecurityBase, whether the delta merges onto the key or supersedes it (its
// values, or its whole tree: supersede-tree ignored the option before).
func TestMergeSecurityChoice(t *testing.T) {
	sdBase := append([]byte(nil), defaultSecurity...)
	sdDelta := append([]byte(nil), defaultSecurity...)
	sdDelta[len(sdDelta)-1] ^= 0xff // a different descriptor
	base := key("ROOT", sub(key("A", sd(sdBase), sub(key("C", sd(sdBase))))))
	for _, d := range []struct {
		name  string
		delta *Key
	}{
		{"merged", key("ROOT", sub(key("A", inherit(), sd(sdDelta), sub(key("C", sd(sdDelta))))))},
		{"supersede-local", key("ROOT", sub(key("A", layer(LayerSupersedeLocal), sd(sdDelta), sub(key("C", sd(sdDelta))))))},
		{"supersede-tree", key("ROOT", sub(key("A", layer(LayerSupersedeTree), sd(sdDelta), sub(key("C", sd(sdDelta))))))},
	} {
		for _, tc := range []struct {
			opt  []MergeOption
			want []byte
		}{{nil, sdDelta}, {[]MergeOption{WithSecurityFrom(SecurityBase)}, sdBase}} {
			m, err := Merge(context.Background(), base, []*Key{d.delta}, tc.opt...)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			root, err := ReadTree(out)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := root.Subkey("a")
			if a == nil || !bytes.Equal(a.Security, tc.want) {
				t.Fatalf("%s, options %v: key A has the wrong security descriptor", d.name, tc.opt)
			}
			c, _ := a.Subkey("c")
			if c == nil || !bytes.Equal(c.Security, tc.want) {
				t.Fatalf("%s, options %v: key A\\C has the wrong security descriptor", d.name, tc.opt)
			}
			if err := Check(out); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestMergeRefusesRootTombstone(t *testing.T) {
	_, err := Merge(context.Background(), key("ROOT"), []*Key{key("ROOT", layer(LayerTombstone))})
	if !errors.Is(err, ErrMerge) {
		t.Fatalf("got %v, want ErrMerge", err)
	}
}

func TestMergeLeavesBaseUntouched(t *testing.T) {
	base := key("ROOT", sub(key("A", sz("x", "1"), sub(key("B")))))
	before, _ := Marshal(base)
	_, err := Merge(context.Background(), base, []*Key{key("ROOT", sub(key("A", layer(LayerTombstone)), key("C")))})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := Marshal(base)
	if !bytes.Equal(before, after) {
		t.Fatal("Merge changed the base tree")
	}
}

// TestMergeRealDelta merges the offreg-written System_Delta onto a base that
// has the keys it tombstones and supersedes, and checks each rule where the
// real delta exercises it.
func TestMergeRealDelta(t *testing.T) {
	delta := rootOf(t, readFixture(t, "System_Delta"))
	// Find the delta's tombstoned and superseded keys.
	var tombs, trees []string
	err := Walk(context.Background(), delta, func(p string, k *Key) error {
		switch k.Layer {
		case LayerTombstone:
			tombs = append(tombs, p)
		case LayerSupersedeTree:
			trees = append(trees, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tombs) != 2 || len(trees) != 62 {
		t.Fatalf("System_Delta: %d tombstones, %d supersede-tree keys; the fixture README says 2 and 62", len(tombs), len(trees))
	}
	// A base holding every tombstoned and superseded path, each with a
	// value and a child that must disappear.
	base := key("ROOT")
	for _, p := range append(append([]string{}, tombs...), trees...) {
		k := base
		for _, part := range strings.Split(strings.TrimPrefix(p, `\`), `\`) {
			var next *Key
			for _, s := range k.Subkeys {
				if strings.EqualFold(s.Name, part) {
					next = s
				}
			}
			if next == nil {
				next = key(part)
				k.Subkeys = append(k.Subkeys, next)
			}
			k = next
		}
		k.Values = append(k.Values, Value{Name: "fromBase", Type: RegSZ, Data: utf16z("base")})
		k.Subkeys = append(k.Subkeys, key("OnlyInBase"))
	}
	bb, err := Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Merge(context.Background(), rootOf(t, bb), []*Key{delta})
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(out); err != nil {
		t.Fatal(err)
	}
	got := map[string]DumpKey{}
	for _, d := range readDump(t, out) {
		got[strings.ToUpper(d.Path)] = d
	}
	for _, p := range tombs {
		for q := range got {
			if q == strings.ToUpper(p) || strings.HasPrefix(q, strings.ToUpper(p)+`\`) {
				t.Errorf("tombstoned %s survives as %s", p, q)
			}
		}
	}
	for _, p := range trees {
		d, ok := got[strings.ToUpper(p)]
		if !ok {
			t.Errorf("superseding key %s missing", p)
			continue
		}
		for _, v := range d.Values {
			if v.Name == "fromBase" {
				t.Errorf("%s keeps a base value under supersede-tree", p)
			}
		}
		if _, ok := got[strings.ToUpper(p+`\OnlyInBase`)]; ok {
			t.Errorf("%s keeps a base subkey under supersede-tree", p)
		}
	}
	// Every non-tombstone delta key is in the result, with no tombstoned
	// value.
	err = Walk(context.Background(), delta, func(p string, k *Key) error {
		d, ok := got[strings.ToUpper(p)]
		if !ok {
			for _, tp := range tombs {
				if strings.HasPrefix(strings.ToUpper(p), strings.ToUpper(tp)) {
					return nil
				}
			}
			t.Errorf("delta key %s missing from the merge", p)
			return nil
		}
		for _, v := range k.Values {
			found := false
			for _, mv := range d.Values {
				if strings.EqualFold(mv.Name, v.Name) {
					found = true
				}
			}
			if found == v.Tombstone {
				t.Errorf("%s value %q: tombstone %v, present in merge %v", p, v.Name, v.Tombstone, found)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
