package cim

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
)

// swapRootNames swaps the name offsets of the small CIM's root entries "d"
// and "g": the table is then out of the upcase table's order.
func swapRootNames(t *testing.T, l smallLayout) {
	t.Helper()
	b, err := os.ReadFile(l.meta)
	if err != nil {
		t.Fatal(err)
	}
	no := l.rootLT + 8 + 2*4
	a, z := binary.LittleEndian.Uint32(b[no:]), binary.LittleEndian.Uint32(b[no+4:])
	patch(t, l.meta, no, append(u32b(z), u32b(a)...))
}

// A directory out of the upcase table's order lists names that a lookup by
// name (cim cat, CimFS's binary search) cannot find: listing it is refused
// as a format error, as walking the view is; fsck reports the pair.
func TestUnsortedDirectoryIsRefused(t *testing.T) {
	dir := t.TempDir()
	c := buildSmall(t, dir)
	swapRootNames(t, layoutOf(t, c))
	im := mustOpen(t, c)
	if ents, err := im.ReadDir(""); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "sorted before") {
		t.Fatalf("ReadDir = %v, %v; want a format error naming the order", ents, err)
	}
	if _, err := im.View(); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), `"g" sorted before "d"`) {
		t.Fatalf("View: %v, want a format error naming the pair", err)
	}
	probs, err := Fsck(c)
	if err != nil || len(probs) == 0 || !strings.Contains(probs[0].String(), "sorted before") {
		t.Fatalf("Fsck = %v, %v", probs, err)
	}
}

// An EaOffset with EaLength 0 (or the reverse) is not a valid file: the
// reader refuses it and fsck reports it, instead of showing no EAs.
func TestEAOffsetWithoutLength(t *testing.T) {
	for _, tc := range []struct {
		name  string
		at    int64 // offset in d/f's file record
		value []byte
		want  string
	}{
		{"offset with length 0", 64, u64b(8), "EaOffset 0x8 with EaLength 0"},
		{"length with offset 0", 2, u16b(4), "EaLength 4 with EaOffset 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := buildSmall(t, dir)
			l := layoutOf(t, c)
			patch(t, l.meta, l.ft+2*int64(fileSizeV3)+tc.at, tc.value) // d/f is FileID 3
			im := mustOpen(t, c)
			if _, err := im.Stat("d/f"); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Stat = %v, want a format error %q", err, tc.want)
			}
			if _, err := im.View(); !errors.Is(err, ErrFormat) {
				t.Fatalf("View: %v, want a format error", err)
			}
			probs, err := Fsck(c)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, p := range probs {
				found = found || strings.Contains(p.String(), tc.want)
			}
			if !found {
				t.Fatalf("Fsck problems %v, want %q", probs, tc.want)
			}
		})
	}
}
