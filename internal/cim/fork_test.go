package cim

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/cimconv/cimconv/internal/fsview"
)

// TestForkedChain builds base -> l1 -> l2 -> l3 with whiteouts (Unlink),
// replacements and hard links into parents' files, and checks every view,
// that parents' data is not copied, and that the chain opens after being
// copied elsewhere.
func TestForkedChain(t *testing.T) {
	dir := t.TempDir()
	bigA := bytes.Repeat([]byte("A"), 300000)
	bigB := bytes.Repeat([]byte("B"), 200000)
	ids := []GUID{{1}, {2}, {3}, {4}}

	// base
	w, err := Create(dir, "base", WithRegionSetID(ids[0]))
	if err != nil {
		t.Fatal(err)
	}
	want := expect{}
	w.AddFile("Files", dirInfo(sdA), 0)
	want.dir("Files", sdA)
	mustAddFile(t, w, "Files/a.txt", fileInfo(0, sdA), bigA)
	want.file("Files/a.txt", 0, sdA, bigA)
	mustAddFile(t, w, "Files/b.txt", fileInfo(0, sdB), bigB)
	want.file("Files/b.txt", 0, sdB, bigB)
	w.AddFile("Files/dir", dirInfo(sdA), 0)
	want.dir("Files/dir", sdA)
	mustAddFile(t, w, "Files/dir/c.txt", fileInfo(0, sdA), []byte("c v1"))
	want.file("Files/dir/c.txt", 0, sdA, []byte("c v1"))
	mustAddStream(t, w, "Files/dir/c.txt", "ads", bigB)
	ce := want["Files/dir/c.txt"]
	ce.Streams = []fsview.Stream{{Name: "ads", Size: int64(len(bigB)), SHA256: sum(bigB)}}
	want["Files/dir/c.txt"] = ce
	mustAddFile(t, w, "Files/zero", fileInfo(0, sdA), make([]byte, 5000))
	want.file("Files/zero", 0, sdA, make([]byte, 5000))
	mustCommit(t, w)
	compareView(t, want, mustOpen(t, filepath.Join(dir, "base.cim")))

	// l1: whiteout b.txt, new file, cross-layer hard link, directory
	// re-listed (children kept), c.txt replaced.
	w, err = CreateForked(dir, "l1", "base", WithRegionSetID(ids[1]))
	if err != nil {
		t.Fatal(err)
	}
	if ex, isDir := w.Stat("files/DIR/C.TXT"); !ex || isDir {
		t.Errorf("Stat of a parent's file: %v %v", ex, isDir)
	}
	if err := w.Unlink("Files/B.txt"); err != nil {
		t.Fatal(err)
	}
	delete(want, "Files/b.txt")
	mustAddFile(t, w, "Files/new.txt", fileInfo(0, sdB), []byte("new in l1"))
	want.file("Files/new.txt", 0, sdB, []byte("new in l1"))
	if err := w.AddLink("Files/a.txt", "Files/a-link.txt"); err != nil {
		t.Fatal(err)
	}
	want.file("Files/a-link.txt", 0, sdA, bigA)
	if err := w.AddFile("Files/dir", dirInfo(sdB), 0); err != nil {
		t.Fatal(err)
	}
	want.dir("Files/dir", sdB)
	mustAddFile(t, w, "Files/dir/c.txt", fileInfo(0, sdB), []byte("c v2"))
	want.file("Files/dir/c.txt", 0, sdB, []byte("c v2"))
	mustCommit(t, w)
	compareView(t, want, mustOpen(t, filepath.Join(dir, "l1.cim")))

	// l2: remove a subtree and the original of the hard link; the link keeps
	// the base's data.
	w, err = CreateForked(dir, "l2", "l1", WithRegionSetID(ids[2]))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"Files/dir", "Files/a.txt"} {
		if err := w.Unlink(p); err != nil {
			t.Fatal(err)
		}
	}
	delete(want, "Files/dir")
	delete(want, "Files/dir/c.txt")
	delete(want, "Files/a.txt")
	if err := w.Unlink("Files/dir/c.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Unlink under a removed dir: %v", err)
	}
	w.AddFile("Files/dir2", dirInfo(sdA), 0)
	want.dir("Files/dir2", sdA)
	mustAddFile(t, w, "Files/dir2/x", fileInfo(0, sdA), []byte("x"))
	want.file("Files/dir2/x", 0, sdA, []byte("x"))
	if err := w.AddLink("Files/zero", "Files/dir2/zero-link"); err != nil {
		t.Fatal(err)
	}
	want.file("Files/dir2/zero-link", 0, sdA, make([]byte, 5000))
	mustCommit(t, w)
	compareView(t, want, mustOpen(t, filepath.Join(dir, "l2.cim")))

	// l3: one more file.
	w, err = CreateForked(dir, "l3", "l2", WithRegionSetID(ids[3]))
	if err != nil {
		t.Fatal(err)
	}
	mustAddFile(t, w, "Files/l3.txt", fileInfo(0, sdA), []byte("3"))
	want.file("Files/l3.txt", 0, sdA, []byte("3"))
	mustCommit(t, w)
	l3 := filepath.Join(dir, "l3.cim")
	compareView(t, want, mustOpen(t, l3))

	info, err := Inspect(l3)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Parents) != 3 || info.Parents[0].ID != ids[0].String() || info.Parents[2].ID != ids[2].String() {
		t.Errorf("parents %+v, want base, l1, l2 in that order", info.Parents)
	}
	// Parent data is not copied: the children's data regions hold only their
	// headers (their new files are small), so they are far smaller than a.txt.
	for i, name := range []string{"l1", "l2", "l3"} {
		region := filepath.Join(dir, "region_"+ids[i+1].String()+"_1")
		fi, err := os.Stat(region)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != regionHeaderSize {
			t.Errorf("%s: data region is %d bytes, want only its %d-byte header", name, fi.Size(), regionHeaderSize)
		}
	}
	// Parents are not modified by forking.
	baseInfo, err := Inspect(filepath.Join(dir, "base.cim"))
	if err != nil || baseInfo.Files != 4 {
		t.Errorf("base after forking: %+v %v", baseInfo, err)
	}

	// The whole directory copied elsewhere still opens.
	moved := t.TempDir()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if err := os.WriteFile(filepath.Join(moved, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	compareView(t, want, mustOpen(t, filepath.Join(moved, "l3.cim")))

	// A missing parent region file is refused at open.
	if err := os.Remove(filepath.Join(moved, "region_"+ids[1].String()+"_0")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(moved, "l3.cim")); err == nil {
		t.Error("Open with a missing parent region file succeeded")
	}
}

func TestForkedErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := CreateForked(dir, "child", "absent"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("fork from absent parent: %v", err)
	}
	w, err := Create(dir, "p", WithRegionSetID(GUID{9}))
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, w)
	if _, err := CreateForked(dir, "c", "p", WithRegionSetID(GUID{9})); err == nil {
		t.Error("fork reusing the parent's region set ID accepted")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

// TestForkKeepsFirstParent: a hard-linked file's ParentFileId names the
// directory it was created in, also after forking, even when another link is
// reached first breadth-first.
func TestForkKeepsFirstParent(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "base")
	if err != nil {
		t.Fatal(err)
	}
	w.AddFile("Files", dirInfo(nil), 0)
	w.AddFile("Files/deep", dirInfo(nil), 0)
	mustAddFile(t, w, "Files/deep/x.txt", fileInfo(0, nil), []byte("x"))
	if err := w.AddLink("Files/deep/x.txt", "aaa-link"); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, w)
	for _, name := range []string{"base", "child"} {
		if name == "child" {
			c, err := CreateForked(dir, "child", "base")
			if err != nil {
				t.Fatal(err)
			}
			mustCommit(t, c)
		}
		im := mustOpen(t, filepath.Join(dir, name+".cim"))
		x, err := im.Stat("aaa-link")
		if err != nil {
			t.Fatal(err)
		}
		deep, _ := im.Stat("Files/deep")
		if x.ParentID != deep.FileID {
			t.Errorf("%s: ParentID %d, want Files/deep (%d)", name, x.ParentID, deep.FileID)
		}
	}
}

// TestForkDeterministic: the same chain built twice gives identical child files.
func TestForkDeterministic(t *testing.T) {
	build := func(dir string) {
		buildEveryKind(t, dir, "base", WithRegionSetID(GUID{5}))
		w, err := CreateForked(dir, "child", "base", WithRegionSetID(GUID{6}))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Unlink("Files/big.bin"); err != nil {
			t.Fatal(err)
		}
		if err := w.AddLink("Files/hello.txt", "Files/again.txt"); err != nil {
			t.Fatal(err)
		}
		mustAddFile(t, w, "Files/child.bin", fileInfo(0, sdB), bytes.Repeat([]byte("c"), 9000))
		mustCommit(t, w)
	}
	d1, d2 := t.TempDir(), t.TempDir()
	build(d1)
	build(d2)
	names, _ := filepath.Glob(filepath.Join(d1, "*"))
	if len(names) != 14 {
		t.Fatalf("files %v", names)
	}
	for _, n := range names {
		a, _ := os.ReadFile(n)
		b, err := os.ReadFile(filepath.Join(d2, filepath.Base(n)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs between two identical builds (%v)", filepath.Base(n), err)
		}
	}
}
