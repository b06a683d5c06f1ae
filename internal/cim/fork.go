package cim

import (
	"encoding/binary"
	"fmt"
	"unicode/utf16"
)

// loadParent fills the writer's tree with the full tree of the parent image
// at path and makes its region sets this image's parents.
//
// Region indexes: the child's parent list is the parent's own parent list
// followed by the parent's region set, so every region index stored in the
// parent (its ancestors' regions first, then its own) means the same region
// in the child. Data stream offsets are therefore copied verbatim and no file
// data is copied. Metadata (SDs, EAs, reparse data, link and file tables) is
// rewritten in full in the child's metadata region.
func (w *Writer) loadParent(path string) error {
	im, err := Open(path)
	if err != nil {
		return err
	}
	defer im.Close()
	w.parents = append(append([]regionSet(nil), im.hdr.Parents...), im.hdr.Regions)
	w.base = len(im.regions)

	byID := map[uint32]*inode{}
	type item struct {
		n   *inode
		rec *fileRecord
		id  uint32
	}
	rootRec, err := im.record(im.root)
	if err != nil {
		return err
	}
	root, err := w.inodeFromRecord(im, im.root, rootRec)
	if err != nil {
		return err
	}
	w.root = root
	byID[im.root] = root
	queue := []item{{root, rootRec, im.root}}
	type lateParent struct {
		n  *inode
		id uint32
	}
	var late []lateParent // ParentFileId names a directory not reached yet
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		ents, err := im.dirEntries(it.rec)
		if err != nil {
			return fmt.Errorf("FileID %d: %w", it.id, err)
		}
		for _, e := range ents {
			id := binary.LittleEndian.Uint32(e.entry)
			name := string(utf16.Decode(e.name))
			if n, ok := byID[id]; ok {
				if n.isDir {
					return formatErr("directory FileID %d linked twice", id)
				}
				it.n.children[foldKey(name, w.upcase)] = &dentry{name: name, node: n}
				continue
			}
			rec, err := im.record(id)
			if err != nil {
				return err
			}
			n, err := w.inodeFromRecord(im, id, rec)
			if err != nil {
				return fmt.Errorf("%s (FileID %d): %w", name, id, err)
			}
			n.firstParent = it.n
			if rec.ParentID != it.id {
				if p, ok := byID[rec.ParentID]; ok && p.isDir {
					n.firstParent = p // keep the parent's ParentFileId for hard-linked files
				} else {
					late = append(late, lateParent{n, rec.ParentID})
				}
			}
			byID[id] = n
			it.n.children[foldKey(name, w.upcase)] = &dentry{name: name, node: n}
			if n.isDir {
				queue = append(queue, item{n, rec, id})
			}
		}
	}
	for _, l := range late {
		if p, ok := byID[l.id]; ok && p.isDir {
			l.n.firstParent = p
		}
	}
	return nil
}

func (w *Writer) inodeFromRecord(im *Image, id uint32, rec *fileRecord) (*inode, error) {
	st, err := im.stat(id, rec)
	if err != nil {
		return nil, err
	}
	n := &inode{
		isDir:   st.IsDir,
		flags:   rec.Flags,
		times:   rec.Times,
		sd:      w.internSD(st.SecurityDescriptor),
		ea:      st.ExtendedAttributes,
		reparse: st.ReparseData,
	}
	if n.isDir {
		n.children = map[string]*dentry{}
	} else {
		if err := checkParentStream(im, rec.DefaultStream); err != nil {
			return nil, err
		}
		n.data = rec.DefaultStream
	}
	ents, err := im.streamEntries(rec)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		s := parseStream(e.entry)
		if s.typ() != streamTypeData {
			return nil, formatErr("alternate stream of type %d", s.typ())
		}
		if err := checkParentStream(im, s); err != nil {
			return nil, err
		}
		name := string(utf16.Decode(e.name))
		n.streams = append(n.streams, &altStream{name: name, key: foldKey(name, w.upcase), s: s})
	}
	return n, nil
}

// checkParentStream refuses a stream whose data lies outside the parent's regions.
func checkParentStream(im *Image, s stream) error {
	if s.sparse() || s.size() == 0 {
		return nil
	}
	if s.typ() == streamTypePeImage {
		_, err := im.peImage(s)
		return err
	}
	_, _, err := im.locate(s.Offset, 0, uint64(s.size()))
	return err
}
