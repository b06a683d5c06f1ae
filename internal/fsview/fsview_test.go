package fsview

import "testing"

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
