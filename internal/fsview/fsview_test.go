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
