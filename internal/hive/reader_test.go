package hive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFixtures opens every real hive of the shared fixtures and checks what
// its README says it exercises.
func TestFixtures(t *testing.T) {
	tests := []struct {
		file    string
		openErr error // from Open
		loadErr error // from loading the whole tree
		check   bool  // passes the strict checker
		keys    int
		find    []string // paths that exist
		missing []string // paths that do not
	}{
		{file: "BigDataHive", check: true, keys: 2},
		{file: "BogusKeyNamesHive", check: true, keys: 3},
		{file: "EmptyHive", check: true, keys: 1},
		{file: "ExtendedASCIIHive", check: true, keys: 2},
		{file: "ManySubkeysHive", check: true, keys: 5003,
			find:    []string{`key_with_many_subkeys\2119\find_me`, `KEY_WITH_MANY_SUBKEYS\1`},
			missing: []string{`key_with_many_subkeys\3000\find_me`, `key_with_many_subkeys\5001`}},
		{file: "MultiSzHive", check: true, keys: 2},
		{file: "OffHive", check: true, keys: 1},
		{file: "StringValuesHive", check: true, keys: 2},
		{file: "System_Delta", check: true, keys: 586},
		{file: "UnicodeHive", check: true, keys: 3},
		{file: "UpcaseHive", check: true, keys: 4},
		{file: "ValuesOrderHive", check: true, keys: 1},
		{file: "WrongOrderHive", keys: 11}, // readable, but out of order
		{file: "NewDirtyHive1/RecoveredHive_Windows10", keys: 5},
		{file: "NewDirtyHive1/NewDirtyHive", openErr: ErrDirty},
		{file: "TruncatedHive", openErr: ErrCorrupt},
		{file: "BadListHive", loadErr: ErrCorrupt},
		{file: "BadSubkeyHive", loadErr: ErrCorrupt},
		{file: "DuplicateSubkeysHive", loadErr: ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b := readFixture(t, tt.file)
			h, err := Open(b)
			if tt.openErr != nil {
				if !errors.Is(err, tt.openErr) {
					t.Fatalf("Open: got %v, want %v", err, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			root, err := h.Root()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			err = Walk(context.Background(), root, func(string, *Key) error { n++; return nil })
			if tt.loadErr != nil {
				if !errors.Is(err, tt.loadErr) {
					t.Fatalf("load: got %v, want %v", err, tt.loadErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.keys {
				t.Errorf("%d keys, want %d", n, tt.keys)
			}
			if err := Check(b); (err == nil) != tt.check {
				t.Errorf("Check = %v, want pass=%v", err, tt.check)
			}
			for _, p := range tt.find {
				if k := lookup(t, root, p); k == nil {
					t.Errorf("%s not found", p)
				}
			}
			for _, p := range tt.missing {
				if k := lookup(t, root, p); k != nil {
					t.Errorf("%s found", p)
				}
			}
		})
	}
}

func lookup(t *testing.T, root *Key, path string) *Key {
	k := root
	for _, part := range strings.Split(path, `\`) {
		s, err := k.Subkey(part)
		if err != nil {
			t.Fatal(err)
		}
		if s == nil {
			return nil
		}
		k = s
	}
	return k
}

// TestLayeredFlags reads the layered-key fields of the offreg-written delta
// in the numbers its README gives.
func TestLayeredFlags(t *testing.T) {
	h, err := Open(readFixture(t, "System_Delta"))
	if err != nil {
		t.Fatal(err)
	}
	if h.Minor != 6 || h.Flags != FlagLayered || !h.Offline {
		t.Fatalf("header: 1.%d flags %#x offline %v, want 1.6, 0x2, true", h.Minor, h.Flags, h.Offline)
	}
	if !strings.EqualFold(h.FileName, `SandboxState\Hives\system_Delta`) {
		t.Errorf("file name %q", h.FileName)
	}
	root, _ := h.Root()
	counts := map[string]int{}
	vals, tombVals := 0, 0
	err = Walk(context.Background(), root, func(p string, k *Key) error {
		f := k.Layer.String()
		if k.InheritClass {
			f += "+inherit"
		}
		counts[f]++
		for _, v := range k.Values {
			vals++
			if v.Tombstone {
				tombVals++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"none+inherit": 514, "supersede-tree": 61, "supersede-tree+inherit": 1, "tombstone": 2, "none": 8}
	for f, n := range want {
		if counts[f] != n {
			t.Errorf("%s: %d keys, want %d (all: %v)", f, counts[f], n, counts)
		}
	}
	if vals != 820 || tombVals != 3 {
		t.Errorf("%d values, %d tombstones; want 820 and 3", vals, tombVals)
	}
}

// TestRoundTripFixtures writes every readable fixture again: the dump is
// unchanged, the output passes the strict checker, and writing is
// deterministic and idempotent.
func TestRoundTripFixtures(t *testing.T) {
	dir := fixtureDir(t)
	for _, name := range []string{"BigDataHive", "BogusKeyNamesHive", "EmptyHive", "ExtendedASCIIHive",
		"ManySubkeysHive", "MultiSzHive", "OffHive", "StringValuesHive", "System_Delta", "UnicodeHive",
		"UpcaseHive", "ValuesOrderHive", "WrongOrderHive", "NewDirtyHive1/RecoveredHive_Windows10"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			out := roundTrip(t, b, name == "System_Delta")
			if got, want := dumpOf(t, out), dumpOf(t, b); got != want {
				t.Fatalf("dump changed by the round trip:\n%s", firstDiff(got, want))
			}
		})
	}
}

// roundTrip writes the tree of b, checks the output and returns it.
func roundTrip(t *testing.T, b []byte, layered bool) []byte {
	t.Helper()
	var opts []WriteOption
	if layered {
		opts = append(opts, WithLayered())
	}
	root, err := ReadTree(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(out); err != nil {
		t.Fatalf("written hive: %v", err)
	}
	again, err := Marshal(root, opts...)
	if err != nil || !bytes.Equal(out, again) {
		t.Fatalf("second write differs (err %v)", err)
	}
	lazy := rootOf(t, b)
	if got, err := Marshal(lazy, opts...); err != nil || !bytes.Equal(out, got) {
		t.Fatalf("writing the tree unloaded differs (err %v)", err)
	}
	if lazy.Loaded() {
		t.Fatal("writing the tree loaded its root")
	}
	root2, err := ReadTree(out)
	if err != nil {
		t.Fatal(err)
	}
	third, err := Marshal(root2, opts...)
	if err != nil || !bytes.Equal(out, third) {
		t.Fatalf("writing the written hive's tree differs (err %v)", err)
	}
	return out
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return "got  " + al[i] + "\nwant " + bl[i]
		}
	}
	return "lengths differ"
}

// TestCorruptHeader: the checksum, the dirty state and the version are
// checked before anything else.
func TestCorruptHeader(t *testing.T) {
	good, err := Marshal(key("ROOT", sub(key("A", sz("v", "x")))))
	if err != nil {
		t.Fatal(err)
	}
	fix := func(b []byte) { le.PutUint32(b[hdrChecksum:], checksum(b)) }
	tests := []struct {
		name string
		mod  func([]byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:100] }, ErrCorrupt},
		{"signature", func(b []byte) []byte { b[0] = 'x'; return b }, ErrCorrupt},
		{"checksum", func(b []byte) []byte { b[hdrTimestamp] ^= 1; return b }, ErrChecksum},
		{"dirty", func(b []byte) []byte { le.PutUint32(b[hdrSeq1:], 7); fix(b); return b }, ErrDirty},
		{"version", func(b []byte) []byte { le.PutUint32(b[hdrMinor:], 9); fix(b); return b }, ErrCorrupt},
		{"log file", func(b []byte) []byte { le.PutUint32(b[hdrFileType:], 1); fix(b); return b }, ErrCorrupt},
		{"bins size", func(b []byte) []byte { le.PutUint32(b[hdrBinsSize:], 1<<30); fix(b); return b }, ErrCorrupt},
		{"truncated bins", func(b []byte) []byte { return b[:len(b)-4096] }, ErrCorrupt},
		{"root offset", func(b []byte) []byte { le.PutUint32(b[hdrRootCell:], 0x24); fix(b); return b }, ErrCorrupt},
		{"bin signature", func(b []byte) []byte { b[headerSize] = 'x'; return b }, ErrCorrupt},
		{"cell size", func(b []byte) []byte { le.PutUint32(b[headerSize+binHeaderSize:], 0xfffffff9); return b }, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mod(bytes.Clone(good))
			_, err := ReadTree(b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestCorruptCells flips every 4-byte field of a small hive's cells in turn:
// reading and checking either succeed or fail with ErrCorrupt, never panic.
func TestCorruptCells(t *testing.T) {
	good, err := Marshal(key("ROOT", class("c"), sub(
		key("A", sz("v", "x"), val("big", RegBinary, bytes.Repeat([]byte{1}, 20000))),
		key("B", dword("d", 1)))))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := headerSize; off < len(good); off += 4 {
		if le.Uint32(good[off:]) == 0x01010101 {
			continue // inside the big value's data: nothing to corrupt
		}
		for _, v := range []uint32{0, 0xffffffff, 0x20, 0x7fffffff, 0x1000} {
			b := bytes.Clone(good)
			le.PutUint32(b[off:], v)
			if _, err := ReadTree(b); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("offset %#x = %#x: error %v does not wrap ErrCorrupt", off, v, err)
			}
			if err := Check(b); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("offset %#x = %#x: Check error %v does not wrap ErrCorrupt", off, v, err)
			} else if err != nil {
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no corruption was detected at all")
	}
}

// TestLoopRefused: a subkey list pointing back at the root is refused.
func TestLoopRefused(t *testing.T) {
	b, err := Marshal(key("ROOT", sub(key("A", sub(key("B"))))))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := Open(b)
	root, _ := h.Root()
	_ = root.Load()
	a := root.Subkeys[0]
	ac, _ := h.cell(a.off, "key")
	list := le.Uint32(ac[nkSubkeyList:])
	lc, _ := h.cell(list, "list")
	le.PutUint32(lc[4:], h.root) // A's only subkey is now the root
	if _, err := ReadTree(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

// TestWriteAtMatchesMarshal: the streaming writer (a few MiB in memory,
// patches in place) produces Marshal's bytes, for a hive several times its
// window with keys whose subtrees span flushes.
func TestWriteAtMatchesMarshal(t *testing.T) {
	root := key("ROOT")
	for i := 0; i < 40; i++ {
		k := key(fmt.Sprintf("Group%02d", i), class("cls"))
		for j := 0; j < 300; j++ {
			k.Subkeys = append(k.Subkeys, key(fmt.Sprintf("Item%04d", j),
				val("blob", RegBinary, bytes.Repeat([]byte{byte(i), byte(j)}, 600+j)), sz("s", "x")))
		}
		k.Subkeys = append(k.Subkeys, key("Big", val("db", RegBinary, bytes.Repeat([]byte{7}, 50000))))
		root.Subkeys = append(root.Subkeys, k)
	}
	want, err := Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 3*streamWindow {
		t.Fatalf("test hive is only %d bytes; make it larger than the window", len(want))
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := WriteAt(f, root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(want)) || !bytes.Equal(got, want) {
		t.Fatalf("WriteAt wrote %d bytes (reported %d), Marshal %d; equal: %v", len(got), n, len(want), bytes.Equal(got, want))
	}
}

// A subkey list that names the same key twice is reported once per list,
// and the key's subtree is walked once: walking it per reference made
// Check exponential in a chain of such lists (a few KiB of hive, 2^33 walks).
// The reader refuses such a hive outright.
func TestCheckWalksADoubledKeyOnce(t *testing.T) {
	const depth = 12
	leaf := key("A")
	for range depth {
		leaf = key("A", sub(leaf, key("B")))
	}
	b, err := Marshal(key("ROOT", sub(leaf)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := Open(b)
	if err != nil {
		t.Fatal(err)
	}
	doubled := 0
	for off := h.root; ; {
		c, err := h.cell(off, "key")
		if err != nil {
			t.Fatal(err)
		}
		n, lo := le.Uint32(c[nkSubkeys:]), le.Uint32(c[nkSubkeyList:])
		if n == 0 {
			break
		}
		lc, err := h.cell(lo, "list")
		if err != nil {
			t.Fatal(err)
		}
		if n == 2 { // [A, B] -> [A, A]
			copy(lc[12:20], lc[4:12])
			doubled++
		}
		off = le.Uint32(lc[4:])
	}
	if doubled != depth {
		t.Fatalf("doubled %d lists, want %d", doubled, depth)
	}
	if _, err := ReadTree(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reader: %v, want ErrCorrupt", err)
	}
	var ce *CheckError
	if err := Check(b); !errors.As(err, &ce) {
		t.Fatalf("Check = %v, want a *CheckError", err)
	}
	twice := 0
	for _, p := range ce.Problems {
		if strings.Contains(p.Msg, "referenced twice") {
			twice++
		}
	}
	if twice != depth {
		t.Fatalf("%d \"referenced twice\" problems for %d doubled lists (%d problems in all): the doubled keys were walked more than once", twice, depth, len(ce.Problems))
	}
}
