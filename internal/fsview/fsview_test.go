package fsview

import (
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	base := []Entry{
		{Path: "Files", Type: TypeDir, Attributes: 0x10},
		{Path: "Files/a.txt", Type: TypeFile, Size: 3, Attributes: 0x20, SHA256: "aa"},
	}
	tests := []struct {
		name   string
		got    []Entry
		opt    CompareOptions
		fields []string
	}{
		{"equal", base, CompareOptions{}, nil},
		{"case differs", []Entry{base[0], {Path: "Files/A.TXT", Type: TypeFile, Size: 3, Attributes: 0x20, SHA256: "aa"}}, CompareOptions{}, []string{"spelling"}},
		{"case ignored", []Entry{base[0], {Path: "Files/A.TXT", Type: TypeFile, Size: 3, Attributes: 0x20, SHA256: "aa"}}, CompareOptions{IgnoreCase: true}, nil},
		{"missing", base[:1], CompareOptions{}, []string{"missing"}},
		{"extra", append(append([]Entry{}, base...), Entry{Path: "Files/b", Type: TypeDir}), CompareOptions{}, []string{"extra"}},
		{"content", []Entry{base[0], {Path: "Files/a.txt", Type: TypeFile, Size: 4, Attributes: 0x20, SHA256: "bb"}}, CompareOptions{}, []string{"sha256", "size"}},
		{"streams", []Entry{base[0], {Path: "Files/a.txt", Type: TypeFile, Size: 3, Attributes: 0x20, SHA256: "aa", Streams: []Stream{{Name: "z", Size: 1, SHA256: "cc"}}}}, CompareOptions{}, []string{"streams"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diffs := Compare(base, tt.got, tt.opt)
			if len(diffs) != len(tt.fields) {
				t.Fatalf("got %d differences %v, want fields %v", len(diffs), diffs, tt.fields)
			}
			for i, f := range tt.fields {
				if diffs[i].Field != f {
					t.Errorf("difference %d: field %q, want %q (%v)", i, diffs[i].Field, f, diffs[i])
				}
			}
		})
	}
}

// TestCompareNames: paths match through the CIM writer's upcase table, not
// strings.ToUpper, and two entries of one view with the same name are
// reported, not collapsed into one (a CIM holding "I.txt" and "ı.txt" used to
// match a view holding one of them without a difference).
func TestCompareNames(t *testing.T) {
	dir := Entry{Path: "Files", Type: TypeDir, Attributes: 0x10}
	file := func(p string) Entry { return Entry{Path: p, Type: TypeFile, Size: 1, SHA256: "aa"} }
	tests := []struct {
		name      string
		want, got []Entry
		diffs     []Difference
	}{
		{"case differs only", []Entry{dir, file("Files/a.txt")}, []Entry{dir, file("Files/A.TXT")},
			[]Difference{{Path: "Files/a.txt", Field: "spelling", Want: "Files/a.txt", Got: "Files/A.TXT"}}},
		{"dotless i is another name", []Entry{dir, file("Files/I.txt")}, []Entry{dir, file("Files/\u0131.txt")},
			[]Difference{{Path: "Files/I.txt", Field: "missing"}, {Path: "Files/\u0131.txt", Field: "extra"}}},
		{"micro sign is not Mu", []Entry{dir, file("Files/\u039c")}, []Entry{dir, file("Files/\u00b5")},
			[]Difference{{Path: "Files/\u00b5", Field: "extra"}, {Path: "Files/\u039c", Field: "missing"}}},
		{"outside the BMP case is kept", []Entry{dir, file("Files/\U00010400")}, []Entry{dir, file("Files/\U00010428")},
			[]Difference{{Path: "Files/\U00010400", Field: "missing"}, {Path: "Files/\U00010428", Field: "extra"}}},
		{"two got entries with one name", []Entry{dir, file("Files/a.txt")}, []Entry{dir, file("Files/a.txt"), file("Files/A.TXT")},
			[]Difference{{Path: "Files/A.TXT", Field: "duplicate", Got: "Files/a.txt"}}},
		{"two want entries with one name", []Entry{dir, file("Files/a.txt"), file("FILES/a.txt")}, []Entry{dir, file("Files/a.txt")},
			[]Difference{{Path: "FILES/a.txt", Field: "duplicate", Want: "Files/a.txt"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compare(tt.want, tt.got, CompareOptions{IgnoreTimes: true})
			if len(got) != len(tt.diffs) {
				t.Fatalf("differences %v, want %v", got, tt.diffs)
			}
			for i := range got {
				if got[i] != tt.diffs[i] {
					t.Errorf("difference %d: %+v, want %+v", i, got[i], tt.diffs[i])
				}
			}
		})
	}
	d := Difference{Path: "Files/A.TXT", Field: "duplicate", Got: "Files/a.txt"}
	if s := d.String(); !strings.Contains(s, "same name as Files/a.txt") || !strings.Contains(s, "got") {
		t.Errorf("String() = %q", s)
	}
}

func TestReparseType(t *testing.T) {
	for _, tc := range []struct {
		tag     uint32
		typ     string
		wantTag uint32
	}{
		{0xA000000C, TypeSymlink, 0},
		{0xA0000003, TypeJunction, 0},
		{0x80000017, TypeReparse, 0x80000017}, // WOF
		{0, TypeReparse, 0},
	} {
		typ, tag := ReparseType(tc.tag)
		if typ != tc.typ || tag != tc.wantTag {
			t.Errorf("ReparseType(%#x) = %s, %#x; want %s, %#x", tc.tag, typ, tag, tc.typ, tc.wantTag)
		}
	}
	if got := ReparseBufferTag([]byte{0x0c, 0, 0, 0xa0, 8, 0}); got != 0xA000000C {
		t.Errorf("ReparseBufferTag = %#x", got)
	}
	if got := ReparseBufferTag([]byte{1, 2}); got != 0 {
		t.Errorf("ReparseBufferTag(short) = %#x", got)
	}
}
