package cim

import (
	"encoding/binary"
	"errors"
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

// TestFsckStructuralErrors: corruption a reader cannot get past is Fsck's
// error (wrapping ErrFormat, naming the path), never a panic. Fsck runs
// before the view in `converter cim verify`, so it meets such images first;
// a data stream naming a region the image does not have used to index past
// the region list.
func TestFsckStructuralErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, l smallLayout)
		want   []string // substrings of the error
	}{
		{"data stream in a region the image lacks", func(t *testing.T, l smallLayout) {
			patch(t, l.meta, l.ft+2*int64(fileSizeV3)+40, u64b(7<<48|8)) // d/f: region 7 of 3
		}, []string{"d/f: data stream", "region 7 of 3"}},
		{"alternate stream in a region the image lacks", func(t *testing.T, l smallLayout) {
			// d's stream table: u32 count | Length | Count | first Stream entry.
			patch(t, l.meta, l.dST+4+8, u64b(9<<48|8))
		}, []string{"d:s: data stream", "region 9 of 3"}},
		{"data stream beyond its region file", func(t *testing.T, l smallLayout) {
			patch(t, l.meta, l.ft+2*int64(fileSizeV3)+40, u64b(2<<48|1<<30))
		}, []string{"d/f: data stream", "beyond region file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := buildSmall(t, dir)
			tt.mutate(t, layoutOf(t, c))
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("Fsck panicked: %v", r)
				}
			}()
			probs, err := Fsck(c)
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("Fsck = %v, %v; want an error wrapping ErrFormat", probs, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestDepthLimit: a CIM whose directories nest deeper than maxDepth (the
// deepest a 32767-unit path can reach) is refused by the view's walk and by
// Fsck alike, instead of recursing as deep as a hostile image asks. The
// writer's API refuses such paths, so the tree is built in its inodes.
func TestDepthLimit(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "deep")
	if err != nil {
		t.Fatal(err)
	}
	n := w.root
	for i := 0; i < maxDepth+1; i++ {
		c := &inode{isDir: true, children: map[string]*dentry{}, sd: w.internSD(nil), firstParent: n}
		n.children[foldKey("d", w.upcase)] = &dentry{name: "d", node: c}
		n = c
	}
	mustCommit(t, w)
	c := filepath.Join(dir, "deep.cim")
	im := mustOpen(t, c)
	if _, err := im.View(); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("View: %v, want the depth limit", err)
	}
	if _, err := Fsck(c); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("Fsck: %v, want the depth limit", err)
	}
}
