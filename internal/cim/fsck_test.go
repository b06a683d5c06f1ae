package cim

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFsck(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, c string, l smallLayout)
		want   string // substring of a reported problem; "" = clean
	}{
		{"clean", func(t *testing.T, c string, l smallLayout) {}, ""},
		{"unsorted directory", func(t *testing.T, c string, l smallLayout) {
			// Root holds "d" (FileID 2) and "g" (FileID 3): swap the name offsets.
			b, _ := os.ReadFile(l.meta)
			no := l.rootLT + 8 + 2*4
			a, z := binary.LittleEndian.Uint32(b[no:]), binary.LittleEndian.Uint32(b[no+4:])
			patch(t, l.meta, no, append(u32b(z), u32b(a)...))
		}, "sorted before"},
		{"equal names", func(t *testing.T, c string, l smallLayout) {
			b, _ := os.ReadFile(l.meta)
			no := int64(binary.LittleEndian.Uint32(b[l.rootLT+8+2*4+4:]))
			patch(t, l.meta, l.rootLT+no+2, u16b('D')) // "g" -> "D", equal to "d"
		}, "equal through the upcase table"},
		{"wrong ParentFileId", func(t *testing.T, c string, l smallLayout) {
			// d/f (FileID 3, also linked as g at the root) names itself as parent.
			patch(t, l.meta, l.ft+2*int64(fileSizeV3)+88, u32b(3))
		}, "ParentFileId 3"},
		{"missing objectid file", func(t *testing.T, c string, l smallLayout) {
			os.Remove(filepath.Join(filepath.Dir(c), "objectid_"+smallID.String()+"_1"))
		}, "objectid_"},
		{"data in metadata region", func(t *testing.T, c string, l smallLayout) {
			patch(t, l.meta, l.ft+2*int64(fileSizeV3)+40, u64b(40)) // d/f data -> metadata region
		}, "metadata region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := buildSmall(t, dir)
			tt.mutate(t, c, layoutOf(t, c))
			probs, err := Fsck(c)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if len(probs) > 0 {
					t.Errorf("problems in a clean CIM: %v", probs)
				}
				return
			}
			for _, p := range probs {
				if strings.Contains(p.String(), tt.want) {
					return
				}
			}
			t.Errorf("problems %v, want one containing %q", probs, tt.want)
		})
	}
	// The every-kind CIM and a forked chain are clean too.
	dir := t.TempDir()
	buildEveryKind(t, dir, "every")
	w, err := CreateForked(dir, "child", "every")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Unlink("Files/hello.txt"); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, w)
	for _, n := range []string{"every", "child"} {
		probs, err := Fsck(filepath.Join(dir, n+".cim"))
		if err != nil || len(probs) > 0 {
			t.Errorf("%s: %v %v", n, probs, err)
		}
	}
}
