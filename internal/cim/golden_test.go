package cim

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"path/filepath"
	"testing"
)

// le builds little-endian byte strings for the golden expectations.
type le struct{ bytes.Buffer }

func (b *le) u8(v uint8) *le   { b.WriteByte(v); return b }
func (b *le) u16(v uint16) *le { binary.Write(&b.Buffer, binary.LittleEndian, v); return b }
func (b *le) u32(v uint32) *le { binary.Write(&b.Buffer, binary.LittleEndian, v); return b }
func (b *le) u64(v uint64) *le { binary.Write(&b.Buffer, binary.LittleEndian, v); return b }
func (b *le) raw(p []byte) *le { b.Write(p); return b }
func (b *le) zeros(n int) *le  { b.Write(make([]byte, n)); return b }

// common is the 32-byte CommonHeader.
func common(b *le, headerLen uint32, typ uint8, major, minor uint32) *le {
	return b.raw([]byte("cimfile0")).u32(headerLen).u8(typ).zeros(3).u32(major).u32(minor).zeros(8)
}

func TestGUIDString(t *testing.T) {
	// go-winio prints Data1-Data2-Data3 from little-endian fields, then Data4 as bytes.
	g := GUID{0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}
	if got, want := g.String(), "12345678-9abc-def0-0102-030405060708"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}

// TestGoldenTinyCIM writes a CIM with one file "a" = "hi" (no SD given, so
// NullSD) and checks every byte of the .cim, the region and objectid headers,
// the small-data region, and the metadata objects against offsets derived here
// from the documented layout.
func TestGoldenTinyCIM(t *testing.T) {
	dir := t.TempDir()
	id := GUID{0xef, 0xbe, 0xad, 0xde, 1, 0, 2, 0, 3, 4, 5, 6, 7, 8, 9, 10}
	w, err := Create(dir, "tiny", WithRegionSetID(id))
	if err != nil {
		t.Fatal(err)
	}
	info := &FileInfo{Attributes: AttrArchive, CreationTime: 100, LastWriteTime: 200, ChangeTime: 300, LastAccessTime: 400}
	mustAddFile(t, w, "a", info, []byte("hi"))
	mustCommit(t, w)
	const gid = "deadbeef-0001-0002-0304-05060708090a"
	if id.String() != gid {
		t.Fatalf("GUID %s", id)
	}

	// Metadata region (index 0) layout, every object 8-byte aligned:
	//   40      upcase table, 0x10000 * 2 = 131072 bytes -> ends 131112
	//   131112  NullSD: u16 20 + 20 bytes = 22 -> ends 131134
	//   131136  root link table: 8 + 1*(4 FileID + 4 name offset) + (2 + 2*1) = 20 -> ends 131156
	//   131160  file table: 2 entries * 104 -> ends 131368
	//   131368  file table directory: 1 * 16 -> ends 131384
	//   131384  Filesystem: 24 -> ends 131408
	const (
		upOff, sdOff, ltOff, ftOff, dirOff, fsOff, metaEnd = 40, 131112, 131136, 131160, 131368, 131384, 131408
	)
	meta := func(off uint64) uint64 { return off }          // region index 0
	small := func(off uint64) uint64 { return 2<<48 | off } // small-data region index 2

	var cimWant le
	common(&cimWant, 72, 0, 3, 0)
	cimWant.raw(id[:]).u16(3).u16(0).u32(0) // RegionSet: ID, Count 3
	cimWant.u64(meta(fsOff)).u32(0).u16(0).u16(0)
	checkFile(t, dir, "tiny.cim", cimWant.Bytes(), 0)

	for i, typ := range []uint8{RegionMetadata, RegionData, RegionSmallData} {
		var rh le
		common(&rh, 40, 1, 3, 0).u16(uint16(i)).u8(typ).u8(0).u32(0)
		checkFile(t, dir, "region_"+gid+"_"+string(rune('0'+i)), rh.Bytes(), 0)
		var oh le
		common(&oh, 48, 2, 3, 0).u16(uint16(i)).u8(typ).u8(0).u32(0).u32(48).u32(0)
		full := checkFile(t, dir, "objectid_"+gid+"_"+string(rune('0'+i)), oh.Bytes(), 0)
		if len(full) != 48 {
			t.Errorf("objectid file %d is %d bytes, want 48", i, len(full))
		}
	}
	// Data region: header only. Small data: header + "hi" at 40.
	if b := checkFile(t, dir, "region_"+gid+"_1", nil, 0); len(b) != 40 {
		t.Errorf("data region %d bytes, want 40", len(b))
	}
	if b := checkFile(t, dir, "region_"+gid+"_2", []byte("hi"), 40); len(b) != 42 {
		t.Errorf("small-data region %d bytes, want 42", len(b))
	}

	m := checkFile(t, dir, "region_"+gid+"_0", nil, 0)
	if len(m) != metaEnd {
		t.Fatalf("metadata region %d bytes, want %d", len(m), metaEnd)
	}
	// Upcase table spot checks: 'a'->'A', 'A'->'A', surrogates unchanged.
	for _, c := range []struct{ in, out uint16 }{{'a', 'A'}, {'A', 'A'}, {0xe9, 0xc9}, {0xd83d, 0xd83d}, {0x131, 0x131}} {
		if got := binary.LittleEndian.Uint16(m[upOff+2*int(c.in):]); got != c.out {
			t.Errorf("upcase[%#x] = %#x, want %#x", c.in, got, c.out)
		}
	}
	var sd le
	sd.u16(20).raw(NullSD)
	checkBytes(t, "NullSD object", m[sdOff:sdOff+22], sd.Bytes())

	var lt le
	lt.u32(20).u32(1).u32(2).u32(16).u16(1).u16('a') // Length, Count, FileID 2, name offset 16, name
	checkBytes(t, "root link table", m[ltOff:ltOff+20], lt.Bytes())

	var ft le
	// FileID 1, the root: no flags, zero times, default stream = link table.
	ft.u16(0).u16(0).u32(0).zeros(32).u64(meta(ltOff)).u64(20 | 1<<48)
	ft.u64(meta(sdOff)).u64(0).u64(0).u64(0).u32(0).u16(0).u16(0).zeros(8)
	// FileID 2, "a": Archive flag (8), times, data in the small region.
	ft.u16(8).u16(0).u32(0).u64(100).u64(200).u64(300).u64(400).u64(small(40)).u64(2)
	ft.u64(meta(sdOff)).u64(0).u64(0).u64(0).u32(1).u16(0).u16(0).zeros(8)
	checkBytes(t, "file table", m[ftOff:ftOff+208], ft.Bytes())

	var fd le
	fd.u64(meta(ftOff)).u16(2).u16(104).u32(0)
	checkBytes(t, "file table directory", m[dirOff:dirOff+16], fd.Bytes())
	var fsb le
	fsb.u64(meta(upOff)).u64(meta(dirOff)).u32(1).u32(1)
	checkBytes(t, "filesystem", m[fsOff:fsOff+24], fsb.Bytes())
}

func checkFile(t *testing.T, dir, name string, want []byte, at int) []byte {
	t.Helper()
	b, err := osReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < at+len(want) {
		t.Errorf("%s: %d bytes, want at least %d", name, len(b), at+len(want))
		return b
	}
	checkBytes(t, name, b[at:at+len(want)], want)
	return b
}

func checkBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, hex.EncodeToString(got), hex.EncodeToString(want))
	}
}
