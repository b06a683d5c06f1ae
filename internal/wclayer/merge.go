package wclayer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/cimconv/cimconv/internal/fsview"
)

// node is one path of the merged tree. Children are keyed by folded name so
// lookups are case-insensitive while name keeps the winning spelling.
type node struct {
	name     string
	typ      EntryType // TypeFile, TypeDir or TypeSymlink
	children map[string]*node
	file     *fileState
}

// fileState is what a file, symlink or directory shows; hard links share a
// copy of their target's state as of the moment the link was read.
type fileState struct {
	size          int64
	sha256        string
	attributes    uint32
	sd, ea        []byte
	reparse       []byte
	streams       map[string]fsview.Stream
	lastWriteTime int64
}

// MergeView reads a chain of layers, base first, and returns the view a CIM
// of the top layer must show (`cim verify` compares the two). Semantics:
//
//   - layers apply in order; a whiteout deletes its path and subtree
//     (case-insensitively); a missing whiteout target is not an error;
//   - a later entry replaces an earlier one at the same path (compared
//     case-insensitively) and brings its own spelling. A directory replacing
//     a directory keeps the children; any other replacement drops them (a
//     junction or directory symlink is a symlink here, not a directory);
//   - an entry under a differently spelled parent lands in the existing
//     directory, which keeps its spelling; a parent that does not exist at
//     all is created implicitly (AttrDirectory, no SD): Windows exports
//     always list parents, so this only matters for hand-made tars;
//   - a hard link shows its target's content, attributes, SD, EAs, streams
//     and times as they were when the link was read (a later replacement of
//     the target does not change the link, as with CimFS links);
//   - alternate streams are listed in Streams (sorted by name);
//   - symlinks have Type "symlink" (junctions, i.e. mount-point targets,
//     "junction"), Size 0, no SHA256, Reparse = base64 of the reparse buffer;
//   - the root is not listed.
//
// Every layer gets the options given plus WithBase (first layer only),
// WithParentLookup (the merged view so far) and WithName("#i") unless opts
// name it.
func MergeView(ctx context.Context, layers []func() (io.ReadCloser, error), opts ...Option) ([]fsview.Entry, error) {
	root := &node{typ: TypeDir, children: map[string]*node{}, file: &fileState{}}
	var named options
	for _, o := range opts {
		o(&named)
	}
	for i, open := range layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name := fmt.Sprintf("#%d", i)
		if named.name != "" {
			name = fmt.Sprintf("%s #%d", named.name, i)
		}
		rc, err := open()
		if err != nil {
			return nil, fmt.Errorf("layer %s: open: %w", name, err)
		}
		lopts := append(append([]Option{}, opts...),
			WithName(name),
			WithBase(i == 0),
			WithParentLookup(func(p string) bool { return root.lookup(p) != nil }),
		)
		err = mergeLayer(ctx, root, rc, lopts)
		cerr := rc.Close()
		if err != nil {
			return nil, err
		}
		if cerr != nil {
			return nil, fmt.Errorf("layer %s: close: %w", name, cerr)
		}
	}
	var out []fsview.Entry
	root.walk("", &out)
	fsview.Sort(out)
	return out, nil
}

func mergeLayer(ctx context.Context, root *node, rc io.Reader, opts []Option) error {
	r, err := NewReader(rc, opts...)
	if err != nil {
		return err
	}
	defer r.Close()
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch e.Type {
		case TypeWhiteout:
			root.remove(e.Path)
		case TypeDir:
			n := root.put(e.Path, TypeDir)
			n.file = stateOf(e)
		case TypeFile:
			st := stateOf(e)
			if st.sha256, err = hashData(r, buf); err != nil {
				return err
			}
			root.put(e.Path, TypeFile).file = st
		case TypeSymlink:
			st := stateOf(e)
			st.reparse = e.ReparseData
			root.put(e.Path, TypeSymlink).file = st
		case TypeHardLink:
			t := root.lookup(e.Linkname)
			if t == nil || t.typ == TypeDir {
				return &Error{Layer: r.o.name, Entry: e.TarName, Problem: fmt.Sprintf("hard link target %q is not a file in the merged view", e.Linkname), Err: ErrLinkTarget}
			}
			st := *t.file
			st.streams = cloneStreams(t.file.streams)
			root.put(e.Path, t.typ).file = &st
		case TypeStream:
			owner := root.lookup(e.Path)
			if owner == nil {
				return &Error{Layer: r.o.name, Entry: e.TarName, Problem: fmt.Sprintf("file %q of the stream is not in the merged view", e.Path), Err: ErrOrphanStream}
			}
			sum, err := hashData(r, buf)
			if err != nil {
				return err
			}
			if owner.file.streams == nil {
				owner.file.streams = map[string]fsview.Stream{}
			}
			owner.file.streams[fold(e.StreamName)] = fsview.Stream{Name: e.StreamName, Size: e.Size, SHA256: sum}
		}
	}
}

func stateOf(e *Entry) *fileState {
	return &fileState{
		size:          e.Size,
		attributes:    e.Attributes,
		sd:            e.SecurityDescriptor,
		ea:            e.ExtendedAttributes,
		lastWriteTime: e.LastWriteTime,
	}
}

func hashData(r io.Reader, buf []byte) (string, error) {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, r, buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func cloneStreams(m map[string]fsview.Stream) map[string]fsview.Stream {
	if m == nil {
		return nil
	}
	c := make(map[string]fsview.Stream, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (n *node) lookup(p string) *node {
	cur := n
	for _, c := range strings.Split(p, "/") {
		next, ok := cur.children[fold(c)]
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}

// put returns the node at p, creating missing parents as directories and
// replacing a node of a different kind (see MergeView).
func (n *node) put(p string, typ EntryType) *node {
	comps := strings.Split(p, "/")
	cur := n
	for i, c := range comps {
		key := fold(c)
		next, ok := cur.children[key]
		last := i == len(comps)-1
		switch {
		case !ok:
			next = &node{name: c, typ: TypeDir, file: &fileState{attributes: AttrDirectory}}
			cur.children[key] = next
		case !last && next.typ != TypeDir:
			// The reader refuses entries under files of the same layer; a
			// file of a parent layer below a new directory is replaced.
			next.typ, next.children, next.file = TypeDir, nil, &fileState{attributes: AttrDirectory}
		}
		if last {
			next.name = c
			if typ != TypeDir || next.typ != TypeDir {
				next.children = nil
			}
			next.typ = typ
		}
		if next.typ == TypeDir && next.children == nil {
			next.children = map[string]*node{}
		}
		cur = next
	}
	return cur
}

func (n *node) remove(p string) {
	dir, name := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, name = p[:i], p[i+1:]
	}
	parent := n
	if dir != "" {
		parent = n.lookup(dir)
	}
	if parent != nil && parent.children != nil {
		delete(parent.children, fold(name))
	}
}

func (n *node) walk(prefix string, out *[]fsview.Entry) {
	keys := make([]string, 0, len(n.children))
	for k := range n.children {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := n.children[k]
		p := c.name
		if prefix != "" {
			p = prefix + "/" + c.name
		}
		*out = append(*out, c.entry(p))
		if c.typ == TypeDir {
			c.walk(p, out)
		}
	}
}

func (n *node) entry(p string) fsview.Entry {
	f := n.file
	e := fsview.Entry{Path: p, Attributes: f.attributes, LastWriteTime: f.lastWriteTime}
	switch n.typ {
	case TypeDir:
		e.Type = fsview.TypeDir
	case TypeSymlink:
		// A tar symlink becomes a symlink or, for a mount point, a junction
		// reparse point: typed by its buffer's tag, as a CIM's view is.
		e.Type, e.ReparseTag = fsview.ReparseType(fsview.ReparseBufferTag(f.reparse))
		e.Reparse = base64.StdEncoding.EncodeToString(f.reparse)
	default:
		e.Type, e.Size, e.SHA256 = fsview.TypeFile, f.size, f.sha256
	}
	if f.sd != nil {
		e.SD = base64.StdEncoding.EncodeToString(f.sd)
	}
	if f.ea != nil {
		e.EA = base64.StdEncoding.EncodeToString(f.ea)
	}
	for _, s := range f.streams {
		e.Streams = append(e.Streams, s)
	}
	sort.Slice(e.Streams, func(i, j int) bool { return e.Streams[i].Name < e.Streams[j].Name })
	return e
}
