package hive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, k := range []*Key{
		key("ROOT"),
		key("ROOT", class("c"), sub(key("A", sz("v", "x"), dword("d", 7)), key("B", sub(key("C"))))),
		key("ROOT", sub(key("A", val("big", RegBinary, bytes.Repeat([]byte{2}, 17000))))),
	} {
		b, err := Marshal(k)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	d, err := Marshal(key("ROOT", sub(key("A", layer(LayerTombstone)), key("B", inherit(), tombVal("v"),
		sub(key("C", layer(LayerSupersedeTree), sz("n", "1")))), key("D", layer(LayerSupersedeLocal)))), WithLayered())
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, d)
	// A small real hive (offreg-written), when the shared fixtures are
	// there; the 256 KiB ones slow the fuzzer down too much.
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "hives")
	for _, n := range []string{"OffHive"} {
		if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
			seeds = append(seeds, b)
		}
	}
	return seeds
}

// FuzzRead: any input is either read and checked, or refused with an error
// wrapping ErrCorrupt / ErrDirty / ErrChecksum; a readable hive writes back
// to one with the same dump that passes the strict checker.
func FuzzRead(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		// Fuzzed bytes rarely carry a valid checksum: fix it up so the
		// fuzzer gets past the header.
		if len(b) >= headerSize {
			le.PutUint32(b[hdrChecksum:], checksum(b))
		}
		root, err := ReadTree(b)
		_ = Check(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrDirty) && !errors.Is(err, ErrChecksum) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		h, _ := Open(b)
		out, err := Marshal(root, func() []WriteOption {
			if h.layered {
				return []WriteOption{WithLayered()}
			}
			return nil
		}()...)
		if err != nil {
			return // e.g. a name too long to write: refused, not a panic
		}
		if err := Check(out); err != nil {
			t.Fatalf("written hive fails the check: %v", err)
		}
		var x, y bytes.Buffer
		r2, err := ReadTree(out)
		if err != nil {
			t.Fatal(err)
		}
		if DumpJSON(context.Background(), &x, root) != nil || DumpJSON(context.Background(), &y, r2) != nil || x.String() != y.String() {
			t.Fatal("round trip changed the dump")
		}
	})
}

// FuzzMerge: merging any two readable hives either fails cleanly or gives a
// flat hive that passes the strict checker.
func FuzzMerge(f *testing.F) {
	seeds := fuzzSeeds(f)
	for _, a := range seeds {
		for _, b := range seeds {
			f.Add(a, b)
		}
	}
	f.Fuzz(func(t *testing.T, base, delta []byte) {
		if len(base) > 1<<20 || len(delta) > 1<<20 {
			return
		}
		for _, b := range [][]byte{base, delta} {
			if len(b) >= headerSize {
				le.PutUint32(b[hdrChecksum:], checksum(b))
			}
		}
		bh, err := Open(base)
		if err != nil {
			return
		}
		dh, err := Open(delta)
		if err != nil {
			return
		}
		br, err := bh.Root()
		if err != nil {
			return
		}
		dr, err := dh.Root()
		if err != nil {
			return
		}
		m, err := Merge(context.Background(), br, []*Key{dr})
		if err != nil {
			return
		}
		out, err := Marshal(m)
		// The streaming writer (window, asynchronous writes) must agree.
		var mem memWriterAt
		n, serr := WriteAt(&mem, m)
		if (err == nil) != (serr == nil) || (err != nil && err.Error() != serr.Error()) {
			t.Fatalf("Marshal error %v, WriteAt error %v", err, serr)
		}
		if err != nil {
			return
		}
		if n != int64(len(out)) || !bytes.Equal(mem.b, out) {
			t.Fatalf("WriteAt wrote %d bytes, Marshal %d, not the same", n, len(out))
		}
		if err := Check(out); err != nil {
			t.Fatalf("merged hive fails the check: %v", err)
		}
	})
}

// memWriterAt is an io.WriterAt into memory.
type memWriterAt struct{ b []byte }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}
