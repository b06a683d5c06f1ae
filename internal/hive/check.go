package hive

import (
	"errors"
	"fmt"
	"strings"
)

// Problem is one finding of the strict checker.
type Problem struct {
	Path string // key path (`\A\B`), "" for the file as a whole
	Msg  string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// CheckError lists what the strict checker found; it wraps ErrCorrupt.
type CheckError struct{ Problems []Problem }

func (e *CheckError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "registry hive fails %d strict check(s):", len(e.Problems))
	for i, p := range e.Problems {
		if i == 20 {
			fmt.Fprintf(&sb, "\n  ... and %d more", len(e.Problems)-i)
			break
		}
		sb.WriteString("\n  " + p.String())
	}
	return sb.String()
}

func (e *CheckError) Unwrap() error { return ErrCorrupt }

// maxProblems bounds what Check collects from a badly damaged hive.
const maxProblems = 1000

// Check opens data and checks it strictly, beyond what reading needs:
// subkey lists in Windows order without duplicates, lh/lf hints matching the
// names, per-key counts and largest-length fields, no duplicate value names,
// security descriptors' reference counts and flink/blink ring, and no
// allocated cell that nothing refers to. It returns nil, the error Open or a
// load returns, or a *CheckError.
func Check(data []byte) error {
	h, err := Open(data)
	if err != nil {
		return err
	}
	c := &checker{h: h, used: make([]uint64, len(h.starts)), skRefs: map[uint32]uint32{}}
	c.use(h.root)
	if err := c.key(h.root, noCell, `\`, 0); err != nil {
		return err
	}
	c.security()
	c.leaks()
	if len(c.probs) > 0 {
		return &CheckError{Problems: c.probs}
	}
	return nil
}

type checker struct {
	h      *Hive
	used   []uint64
	skRefs map[uint32]uint32
	probs  []Problem
}

func (c *checker) add(path, format string, args ...any) {
	if len(c.probs) < maxProblems {
		c.probs = append(c.probs, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
}

// use marks a cell as referenced; a second reference is a problem.
func (c *checker) use(off uint32) bool {
	i, bit := off/8/64, uint64(1)<<(uint(off/8)%64)
	if int(i) >= len(c.used) {
		return false
	}
	if c.used[i]&bit != 0 {
		return false
	}
	c.used[i] |= bit
	return true
}

func (c *checker) useOnce(path string, off uint32, what string) {
	if !c.use(off) {
		c.add(path, "%s cell %#x is referenced twice", what, off)
	}
}

func (c *checker) key(off, parent uint32, path string, depth int) error {
	k, err := c.h.loadKey(off, parent, depth)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	cell, _ := c.h.cell(off, "key")
	if cl := le.Uint16(cell[nkClassLen:]); cl > 0 {
		c.useOnce(path, le.Uint32(cell[nkClass:]), "class name")
	}
	if so := le.Uint32(cell[nkSecurity:]); so == noCell {
		c.add(path, "key has no security descriptor")
	} else {
		if c.skRefs[so] == 0 {
			c.use(so)
		}
		c.skRefs[so]++
	}
	// Values.
	if _, err := c.h.appendValues(nil, k); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if k.nvals > 0 {
		c.useOnce(path, k.valOff, "value list")
		lc, _ := c.h.cell(k.valOff, "value list")
		seen := map[string]bool{}
		var maxName, maxData uint32
		for i := uint32(0); i < k.nvals; i++ {
			vo := le.Uint32(lc[4*i:])
			c.useOnce(path, vo, "value")
			v, err := c.h.value(vo)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			vc, _ := c.h.cell(vo, "value")
			if size := le.Uint32(vc[vkDataSize:]); size&dataResident == 0 && size > 0 {
				c.dataCells(path, le.Uint32(vc[vkData:]), size)
			}
			n := encodeName(v.Name)
			f := foldString(n)
			if seen[f] {
				c.add(path, "two values named %q", v.Name)
			}
			seen[f] = true
			maxName, maxData = max(maxName, uint32(2*len(n))), max(maxData, uint32(len(v.Data)))
		}
		if got := le.Uint32(cell[nkMaxValueName:]); got < maxName {
			c.add(path, "largest value name field %d < %d", got, maxName)
		}
		if got := le.Uint32(cell[nkMaxValueData:]); got < maxData {
			c.add(path, "largest value data field %d < %d", got, maxData)
		}
	}
	// Subkeys, in stored order.
	if k.nsubs == 0 {
		return nil
	}
	offs, err := c.h.subkeyOffsets(k.subOff, k.nsubs)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	c.lists(path, k.subOff)
	var prev []uint16
	var maxName uint32
	for i, so := range offs {
		first := c.use(so)
		if !first {
			c.add(path, "key cell %#x is referenced twice", so)
		}
		sc, err := c.h.cell(so, "key")
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(sc) < nkFixed || string(sc[:2]) != "nk" {
			return fmt.Errorf("%s: %w", path, corrupt(so, "not a key (nk) cell"))
		}
		nl := int(le.Uint16(sc[nkNameLen:]))
		if nkFixed+nl > len(sc) {
			return fmt.Errorf("%s: %w", path, corrupt(so, "key name overruns its cell"))
		}
		name := encodeName(decodeName(sc[nkFixed:nkFixed+nl], le.Uint16(sc[nkFlags:])&keyCompName != 0))
		if i > 0 && compareNames(prev, name) >= 0 {
			c.add(path, "subkeys %q and %q out of order or duplicate", string16(prev), string16(name))
		}
		prev = name
		maxName = max(maxName, uint32(2*len(name)))
		c.hint(path, k.subOff, i, name)
		sub := path + `\` + string16(name)
		if depth == 0 {
			sub = `\` + string16(name)
		}
		if !first {
			// Reported above; walking it again would visit its subtree
			// once per reference: exponential in a chain of lists that
			// each name a key twice.
			continue
		}
		if err := c.key(so, off, sub, depth+1); err != nil {
			return err
		}
	}
	if got := le.Uint32(cell[nkMaxSubkeyName:]) & 0xffff; got < maxName {
		c.add(path, "largest subkey name field %d < %d", got, maxName)
	}
	return nil
}

// lists marks the cells of a subkey list (and an ri's leaves) as used.
func (c *checker) lists(path string, off uint32) {
	c.useOnce(path, off, "subkey list")
	lc, _ := c.h.cell(off, "subkey list")
	if string(lc[:2]) == "ri" {
		for i := 0; i < int(le.Uint16(lc[2:])); i++ {
			c.useOnce(path, le.Uint32(lc[4+4*i:]), "subkey list leaf")
		}
	}
}

// hint checks the i-th element's lh hash or lf name hint.
func (c *checker) hint(path string, list uint32, i int, name []uint16) {
	lc, _ := c.h.cell(list, "subkey list")
	if string(lc[:2]) == "ri" {
		for j := 0; j < int(le.Uint16(lc[2:])); j++ {
			leaf, _ := c.h.cell(le.Uint32(lc[4+4*j:]), "subkey list leaf")
			n := int(le.Uint16(leaf[2:]))
			if i < n {
				lc = leaf
				break
			}
			i -= n
		}
	}
	sig := string(lc[:2])
	if sig != "lh" && sig != "lf" {
		return
	}
	got := le.Uint32(lc[8+8*i:])
	switch sig {
	case "lh":
		if want := lhHash(name); got != want {
			c.add(path, "lh hash of %q is %#x, want %#x", string16(name), got, want)
		}
	case "lf":
		var want [4]byte
		for j := 0; j < 4 && j < len(name); j++ {
			if name[j] < 0x100 {
				want[j] = byte(name[j])
			}
		}
		if got != le.Uint32(want[:]) {
			c.add(path, "lf hint of %q is %#x, want %#x", string16(name), got, le.Uint32(want[:]))
		}
	}
}

func (c *checker) dataCells(path string, off, size uint32) {
	c.useOnce(path, off, "value data")
	dc, _ := c.h.cell(off, "value data")
	if size > bigDataSegment && c.h.Minor >= 4 && len(dc) >= 8 && string(dc[:2]) == "db" {
		lo := le.Uint32(dc[4:])
		c.useOnce(path, lo, "big data segment list")
		lc, _ := c.h.cell(lo, "big data segment list")
		for i := 0; i < int(le.Uint16(dc[2:])); i++ {
			c.useOnce(path, le.Uint32(lc[4*i:]), "big data segment")
		}
	}
}

// security checks reference counts and the flink/blink ring.
func (c *checker) security() {
	for off, refs := range c.skRefs {
		sc, err := c.h.cell(off, "security descriptor")
		if err != nil || len(sc) < skFixed {
			continue
		}
		if got := le.Uint32(sc[skRefCount:]); got != refs {
			c.add("", "security descriptor %#x has reference count %d, %d keys use it", off, got, refs)
		}
		for _, f := range []struct {
			field int
			back  int
		}{{skFlink, skBlink}, {skBlink, skFlink}} {
			next := le.Uint32(sc[f.field:])
			nc, err := c.h.cell(next, "security descriptor")
			if err != nil || len(nc) < skFixed || string(nc[:2]) != "sk" {
				c.add("", "security descriptor %#x links to %#x, not a security descriptor", off, next)
				continue
			}
			if le.Uint32(nc[f.back:]) != off {
				c.add("", "security descriptor ring broken between %#x and %#x", off, next)
			}
			if c.skRefs[next] == 0 {
				c.add("", "security descriptor %#x is in the ring but no key uses it", next)
			}
		}
	}
}

// leaks reports allocated cells nothing refers to.
func (c *checker) leaks() {
	n := 0
	first := uint32(0)
	for i, w := range c.h.starts {
		if x := w &^ c.used[i]; x != 0 {
			for b := 0; b < 64; b++ {
				if x&(1<<b) != 0 {
					if n == 0 {
						first = uint32((i*64 + b) * 8)
					}
					n++
				}
			}
		}
	}
	if n > 0 {
		c.add("", "%d allocated cell(s) nothing refers to (first at cell offset %#x)", n, first)
	}
}

// IsCheckError reports whether err came from the strict checks (as opposed
// to a hive that cannot be read at all).
func IsCheckError(err error) bool {
	var ce *CheckError
	return errors.As(err, &ce)
}
