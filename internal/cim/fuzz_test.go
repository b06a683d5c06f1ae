package cim

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// smallTemplate builds the small CIM once and returns its files by name.
func smallTemplate(f *testing.F) (names []string, files map[string][]byte) {
	dir := f.TempDir()
	buildSmall(f, dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	files = map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		files[e.Name()] = b
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, files
}

func writeFiles(t *testing.T, files map[string][]byte) string {
	dir := t.TempDir()
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// mutateSmall writes the small CIM's files with one of them mutated:
// bytes overwritten at an offset, or the file truncated there.
func mutateSmall(t *testing.T, names []string, files map[string][]byte, which uint8, off uint32, data []byte, truncate bool) string {
	mutated := make(map[string][]byte, len(files))
	for n, b := range files {
		mutated[n] = b
	}
	name := names[int(which)%len(names)]
	b := append([]byte(nil), files[name]...)
	o := int(off % uint32(len(b)+1))
	if truncate {
		b = b[:o]
	} else {
		for i := 0; i < len(data) && o+i < len(b); i++ {
			b[o+i] = data[i]
		}
	}
	mutated[name] = b
	return filepath.Join(writeFiles(t, mutated), "small.cim")
}

// FuzzImage mutates one file of a small valid CIM (overwrite bytes at an
// offset, optionally truncate), then opens and reads everything: any input
// must give a result or an error, never a panic or a hang.
func FuzzImage(f *testing.F) {
	names, files := smallTemplate(f)
	meta := "region_" + smallID.String() + "_0"
	idx := uint8(sort.SearchStrings(names, meta))
	metaLen := uint32(len(files[meta]))
	f.Add(uint8(0), uint32(0), []byte{}, false)
	f.Add(idx, metaLen-24, []byte{0xff, 0xff}, false)        // filesystem object
	f.Add(idx, metaLen-100, []byte{1, 0, 0, 0, 9}, false)    // file tables
	f.Add(idx, uint32(131112), []byte{0xff, 0xff, 0}, false) // first SD
	f.Add(idx, metaLen-40, []byte{}, true)
	f.Fuzz(func(t *testing.T, which uint8, off uint32, data []byte, truncate bool) {
		openAndView(mutateSmall(t, names, files, which, off, data, truncate))
	})
}

// FuzzFsck runs Fsck alone on the mutations of FuzzImage. FuzzImage's
// openAndView stops at the view's first error, so Fsck (which `converter cim
// verify` runs before the view) never saw the inputs the view refuses.
func FuzzFsck(f *testing.F) {
	names, files := smallTemplate(f)
	meta := "region_" + smallID.String() + "_0"
	idx := uint8(sort.SearchStrings(names, meta))
	l := layoutOf(f, buildSmall(f, f.TempDir()))
	f.Add(uint8(0), uint32(0), []byte{}, false)
	f.Add(idx, uint32(l.ft+2*int64(fileSizeV3)+40), u64b(7<<48|8), false)    // d/f's data in region 7 of 3
	f.Add(idx, uint32(l.dST+4+8), u64b(2<<48|1<<40), false)                  // d:s's data beyond its region
	f.Add(idx, uint32(l.rootLT+8+2*4), u32b(0xffff), false)                  // root name offset outside
	f.Add(idx, uint32(l.ft+2*int64(fileSizeV3)+88), u32b(0xffffffff), false) // ParentFileId
	f.Add(idx, uint32(l.dLT+8), u32b(1), false)                              // directory cycle
	f.Fuzz(func(t *testing.T, which uint8, off uint32, data []byte, truncate bool) {
		probs, err := Fsck(mutateSmall(t, names, files, which, off, data, truncate))
		if err != nil && len(probs) > 0 {
			t.Fatalf("Fsck returned problems %v with error %v", probs, err)
		}
	})
}

// FuzzOpen replaces the .cim file (headers and parent region sets) of a
// valid image with arbitrary bytes.
func FuzzOpen(f *testing.F) {
	_, files := smallTemplate(f)
	f.Add(files["small.cim"])
	f.Add(files["small.cim"][:40])
	f.Add([]byte("cimfile0"))
	f.Fuzz(func(t *testing.T, cimFile []byte) {
		m := map[string][]byte{}
		for n, b := range files {
			m[n] = b
		}
		m["small.cim"] = cimFile
		dir := writeFiles(t, m)
		openAndView(filepath.Join(dir, "small.cim"))
	})
}

// FuzzLinkTable parses arbitrary link tables of both entry sizes.
func FuzzLinkTable(f *testing.F) {
	f.Add(marshalLinkTable([]linkEntry{{name: []uint16{'a'}, entry: []byte{1, 0, 0, 0}}}, 4))
	f.Add(marshalLinkTable([]linkEntry{{name: []uint16{'x', 'y'}, entry: make([]byte, 16)}}, 16))
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, es := range []int{4, 16} {
			ents, err := parseLinkTable(b, es)
			if err != nil {
				continue
			}
			for _, e := range ents {
				if len(e.entry) != es || len(e.name) == 0 || len(e.name) > maxNameUnits {
					t.Fatalf("bad entry %+v", e)
				}
				foldKey16(e.name, upcaseTable())
			}
		}
	})
}
