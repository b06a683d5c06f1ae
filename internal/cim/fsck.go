package cim

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"
)

// Problem is one inconsistency Fsck found in a CIM that otherwise opens.
type Problem struct {
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Fsck checks invariants a reader does not need but CimFS relies on or a
// correct writer keeps: link and stream tables strictly sorted through the
// image's upcase table (CimFS binary-searches them), no names equal under
// that table, each file's ParentFileId naming a directory that links it,
// every FileID reachable, data streams in data regions, EaOffset and
// EaLength both set or both 0 (the reader refuses other records), and the objectid
// files of the image's own regions present with valid headers.
// Structural corruption (bad offsets, data streams outside their region
// files, cycles, directories nested deeper than the reader's limit) is
// returned as an error wrapping ErrFormat.
func Fsck(path string) ([]Problem, error) {
	im, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	var probs []Problem
	add := func(p, format string, args ...any) {
		probs = append(probs, Problem{Path: p, Message: fmt.Sprintf(format, args...)})
	}

	parents := map[uint32][]uint32{} // FileID -> directories linking it
	reached := map[uint32]bool{im.root: true}
	checkSorted := func(p, what string, ents []linkEntry) {
		for i := 1; i < len(ents); i++ {
			a, b := foldKey16(ents[i-1].name, im.upcase), foldKey16(ents[i].name, im.upcase)
			switch {
			case a == b:
				add(p, "%s: names %q and %q are equal through the upcase table", what, string(utf16.Decode(ents[i-1].name)), string(utf16.Decode(ents[i].name)))
			case a > b:
				add(p, "%s: %q sorted before %q (binary search will miss entries)", what, string(utf16.Decode(ents[i-1].name)), string(utf16.Decode(ents[i].name)))
			}
		}
	}
	// checkData locates a data stream as a reader would (region index below
	// the region count, bytes inside the region file) before looking at its
	// region: a corrupt offset is structural corruption, not a problem.
	checkData := func(p string, s stream) error {
		if s.sparse() || s.size() == 0 || s.typ() != streamTypeData {
			return nil
		}
		r, _, err := im.locate(s.Offset, 0, uint64(s.size()))
		if err != nil {
			return fmt.Errorf("%s: data stream: %w", p, err)
		}
		if r.typ == RegionMetadata {
			add(p, "data stream stored in metadata region %s", r.name)
		}
		return nil
	}
	type parentCheck struct {
		path     string
		id, want uint32
	}
	var parentChecks []parentCheck
	var visit func(dir string, id uint32, rec *fileRecord, depth int) error
	visit = func(dir string, id uint32, rec *fileRecord, depth int) error {
		if depth > maxDepth { // the reader's walk has the same limit
			return formatErr("%s: directories nested deeper than %d", dir, maxDepth)
		}
		ents, err := im.dirEntries(rec)
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		checkSorted(dir, "directory", ents)
		for _, e := range ents {
			p := strings.TrimPrefix(dir+"/"+string(utf16.Decode(e.name)), "/")
			cid := binary.LittleEndian.Uint32(e.entry)
			crec, err := im.record(cid)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			parents[cid] = append(parents[cid], id)
			if reached[cid] {
				if crec.DefaultStream.typ() == streamTypeLinkTable {
					return formatErr("%s: directory FileID %d reached twice", p, cid)
				}
				continue
			}
			reached[cid] = true
			if err := eaFieldsError(crec); err != nil {
				add(p, "%v", err)
			}
			// ParentFileId is checked after the walk, when every link is known.
			parentChecks = append(parentChecks, parentCheck{p, cid, crec.ParentID})
			if err := checkData(p, crec.DefaultStream); err != nil {
				return err
			}
			sents, err := im.streamEntries(crec)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			checkSorted(p, "stream table", sents)
			for _, se := range sents {
				if err := checkData(p+":"+string(utf16.Decode(se.name)), parseStream(se.entry)); err != nil {
					return err
				}
			}
			if crec.DefaultStream.typ() == streamTypeLinkTable {
				if err := visit(p, cid, crec, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	rootRec, err := im.record(im.root)
	if err != nil {
		return nil, err
	}
	if err := visit("", im.root, rootRec, 0); err != nil {
		return nil, fmt.Errorf("fsck %s: %w", path, err)
	}
	for _, c := range parentChecks {
		if !isParent(c.want, parents[c.id]) {
			add(c.path, "ParentFileId %d is not a directory linking this file", c.want)
		}
	}
	var total int
	for _, e := range im.ftdir {
		total += int(e.Count)
	}
	if n := total - len(reached); n > 0 {
		add("", "%d of %d file table entries are not reachable from the root", n, total)
	}
	own := len(im.regions) - int(im.hdr.Regions.Count)
	for i := own; i < len(im.regions); i++ {
		name := "objectid" + strings.TrimPrefix(im.regions[i].name, "region")
		if err := checkObjectIDFile(filepath.Join(filepath.Dir(path), name), i-own); err != nil {
			add("", "%s: %v", name, err)
		}
	}
	return probs, nil
}

func isParent(id uint32, dirs []uint32) bool {
	for _, d := range dirs {
		if d == id {
			return true
		}
	}
	return false
}

func checkObjectIDFile(p string, index int) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, objectIDHeaderSize)
	if _, err := io.ReadFull(f, b); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if _, err := parseCommonHeader(b, fileTypeObjectID); err != nil {
		return err
	}
	if got := int(binary.LittleEndian.Uint16(b[32:])); got != index {
		return fmt.Errorf("index %d in header, want %d", got, index)
	}
	return nil
}
