package fsview

import (
	"fmt"
	"sort"
	"strings"

	"github.com/cimconv/cimconv/internal/upcase"
)

// Entry types, spelled as in `converter cim ls --json`. A reparse point is
// typed by its reparse tag: TypeSymlink (IO_REPARSE_TAG_SYMLINK),
// TypeJunction (IO_REPARSE_TAG_MOUNT_POINT: junctions and mount points) or
// TypeReparse (any other tag, named in Entry.ReparseTag).
const (
	TypeFile     = "file"
	TypeDir      = "dir"
	TypeSymlink  = "symlink"
	TypeJunction = "junction"
	TypeReparse  = "reparse"
)

// Reparse tags with a type of their own.
const (
	ReparseTagSymlink    uint32 = 0xA000000C
	ReparseTagMountPoint uint32 = 0xA0000003
)

// ReparseType is the entry type of a reparse point with tag, and the tag to
// record in Entry.ReparseTag (0 for symlinks and junctions, whose type says
// it).
func ReparseType(tag uint32) (typ string, reparseTag uint32) {
	switch tag {
	case ReparseTagSymlink:
		return TypeSymlink, 0
	case ReparseTagMountPoint:
		return TypeJunction, 0
	}
	return TypeReparse, tag
}

// ReparseBufferTag is the ReparseTag field of a REPARSE_DATA_BUFFER (its
// first four bytes, little endian); 0 when b is shorter.
func ReparseBufferTag(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// Entry describes one path of a tree.
type Entry struct {
	// Path is relative to the root, '/'-separated, spelled as stored
	// (e.g. "Files/Windows/System32/notepad.exe"). The root itself is not listed.
	Path string `json:"path"`
	// Type is TypeFile, TypeDir, TypeSymlink, TypeJunction or TypeReparse.
	Type string `json:"type"`
	// ReparseTag is the reparse tag of a TypeReparse entry (a tag without a
	// type of its own); 0 otherwise.
	ReparseTag uint32 `json:"reparseTag,omitempty"`
	// Size is the default stream's length in bytes (0 for directories).
	Size int64 `json:"size"`
	// Attributes are Windows FILE_ATTRIBUTE_* bits; directories include 0x10,
	// reparse points (symlinks, junctions, others) 0x400.
	Attributes uint32 `json:"attributes"`
	// SHA256 is the hex digest of the default stream (files only).
	SHA256 string `json:"sha256,omitempty"`
	// SD is the self-relative security descriptor, base64.
	SD string `json:"sd,omitempty"`
	// EA is the FILE_FULL_EA_INFORMATION buffer, base64.
	EA string `json:"ea,omitempty"`
	// Reparse is the REPARSE_DATA_BUFFER, base64 (every reparse point).
	Reparse string `json:"reparse,omitempty"`
	// Streams are the alternate data streams, sorted by name.
	Streams []Stream `json:"streams,omitempty"`
	// LastWriteTime is the Windows FILETIME of the last write (100 ns since 1601).
	LastWriteTime int64 `json:"lastWriteTime,omitempty"`
}

// Stream describes one alternate data stream.
type Stream struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Difference is one mismatch between two views.
type Difference struct {
	Path string `json:"path"`
	// Field is "missing", "extra", "duplicate" (Path has the same name as
	// another entry of the same view, named in Want or Got), or the
	// compared field.
	Field string `json:"field"`
	Want  string `json:"want,omitempty"`
	Got   string `json:"got,omitempty"`
}

func (d Difference) String() string {
	switch d.Field {
	case "missing":
		return fmt.Sprintf("%s: missing", d.Path)
	case "extra":
		return fmt.Sprintf("%s: unexpected entry", d.Path)
	case "duplicate":
		side, other := "got", d.Got
		if d.Want != "" {
			side, other = "want", d.Want
		}
		return fmt.Sprintf("%s: same name as %s (equal through the upcase table), a second entry in %s", d.Path, other, side)
	}
	return fmt.Sprintf("%s: %s differs: want %s, got %s", d.Path, d.Field, d.Want, d.Got)
}

// FoldPath is the key two views are matched on: Windows compares names
// case-insensitively, and two paths are the same path when they fold alike
// through the upcase table the CIM writer stores in its images
// (upcase.Fold), the same comparison the layers' merged view uses.
func FoldPath(p string) string { return upcase.Fold(p) }

// CompareOptions selects which fields Compare checks.
type CompareOptions struct {
	// IgnoreTimes skips LastWriteTime.
	IgnoreTimes bool
	// IgnoreCase skips the spelling check of paths that match case-insensitively.
	IgnoreCase bool
}

// Compare reports every difference between want and got, sorted by path.
// Entries are matched by FoldPath. An entry whose path folds like an
// earlier one's of the same view is reported as a "duplicate" (a CIM with
// two such names in one directory has an entry its lookup by name cannot
// tell apart) and is not compared further.
func Compare(want, got []Entry, opt CompareOptions) []Difference {
	var diffs []Difference
	wm := index(want, func(e, first Entry) {
		diffs = append(diffs, Difference{Path: e.Path, Field: "duplicate", Want: first.Path})
	})
	gm := index(got, func(e, first Entry) {
		diffs = append(diffs, Difference{Path: e.Path, Field: "duplicate", Got: first.Path})
	})
	for k, w := range wm {
		g, ok := gm[k]
		if !ok {
			diffs = append(diffs, Difference{Path: w.Path, Field: "missing"})
			continue
		}
		diffs = append(diffs, compareEntry(w, g, opt)...)
	}
	for k, g := range gm {
		if _, ok := wm[k]; !ok {
			diffs = append(diffs, Difference{Path: g.Path, Field: "extra"})
		}
	}
	sort.Slice(diffs, func(i, j int) bool {
		if diffs[i].Path != diffs[j].Path {
			return diffs[i].Path < diffs[j].Path
		}
		return diffs[i].Field < diffs[j].Field
	})
	return diffs
}

// index maps entries by FoldPath; the first of entries that fold alike is
// kept and dup is called for each later one.
func index(es []Entry, dup func(e, first Entry)) map[string]Entry {
	m := make(map[string]Entry, len(es))
	for _, e := range es {
		k := FoldPath(e.Path)
		if first, ok := m[k]; ok {
			dup(e, first)
			continue
		}
		m[k] = e
	}
	return m
}

func compareEntry(w, g Entry, opt CompareOptions) []Difference {
	var d []Difference
	add := func(field, want, got string) {
		if want != got {
			d = append(d, Difference{Path: w.Path, Field: field, Want: want, Got: got})
		}
	}
	if !opt.IgnoreCase {
		add("spelling", w.Path, g.Path)
	}
	add("type", w.Type, g.Type)
	add("reparseTag", fmt.Sprintf("%#x", w.ReparseTag), fmt.Sprintf("%#x", g.ReparseTag))
	add("size", fmt.Sprint(w.Size), fmt.Sprint(g.Size))
	add("attributes", fmt.Sprintf("%#x", w.Attributes), fmt.Sprintf("%#x", g.Attributes))
	add("sha256", w.SHA256, g.SHA256)
	add("sd", w.SD, g.SD)
	add("ea", w.EA, g.EA)
	add("reparse", w.Reparse, g.Reparse)
	add("streams", streamsString(w.Streams), streamsString(g.Streams))
	if !opt.IgnoreTimes {
		add("lastWriteTime", fmt.Sprint(w.LastWriteTime), fmt.Sprint(g.LastWriteTime))
	}
	return d
}

func streamsString(ss []Stream) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = fmt.Sprintf("%s:%d:%s", s.Name, s.Size, s.SHA256)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// Sort orders entries by path, the order `cim ls` prints them in.
func Sort(es []Entry) {
	sort.Slice(es, func(i, j int) bool { return es[i].Path < es[j].Path })
}
