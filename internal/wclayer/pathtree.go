package wclayer

import "strings"

// pathTree records what each path of the layer is, keyed by folded
// components, so every check costs O(length of the path) even for paths of
// thousands of components (a flat map of prefixes would hash each prefix).
type pathTree struct {
	root pnode
}

type pnode struct {
	kind     kind // 0: only a prefix of other entries; kindGone: whited out
	children map[string]*pnode
}

// kindGone marks a path this layer whited out.
const kindGone kind = 255

// get returns the node at the folded key, or nil.
func (t *pathTree) get(key string) *pnode {
	n := &t.root
	for rest := key; ; {
		comp, tail, more := strings.Cut(rest, "/")
		next := n.children[comp]
		if next == nil {
			return nil
		}
		if !more {
			return next
		}
		n, rest = next, tail
	}
}

// lookup reports the kind of an entry of this layer at key.
func (t *pathTree) lookup(key string) (kind, bool) {
	n := t.get(key)
	if n == nil || n.kind == 0 || n.kind == kindGone {
		return 0, false
	}
	return n.kind, true
}

// set records an entry; a non-directory drops whatever was below it.
func (t *pathTree) set(key string, k kind) {
	n := &t.root
	for rest := key; ; {
		comp, tail, more := strings.Cut(rest, "/")
		next := n.children[comp]
		if next == nil {
			next = &pnode{}
			if n.children == nil {
				n.children = map[string]*pnode{}
			}
			n.children[strings.Clone(comp)] = next
		}
		if !more {
			next.kind = k
			if k != kindDir {
				next.children = nil
			}
			return
		}
		n, rest = next, tail
	}
}

// badAncestor returns the first ancestor of key that is a file or symlink
// of this layer, and its kind.
func (t *pathTree) badAncestor(key string) (string, kind) {
	n := &t.root
	for i := 0; ; {
		j := strings.IndexByte(key[i:], '/')
		if j < 0 {
			return "", 0
		}
		n = n.children[key[i:i+j]]
		if n == nil {
			return "", 0
		}
		if n.kind == kindFile || n.kind == kindSymlink {
			return key[:i+j], n.kind
		}
		i += j + 1
	}
}

// goneAbove reports whether key or one of its ancestors was whited out.
func (t *pathTree) goneAbove(key string) bool {
	n := &t.root
	for rest := key; ; {
		comp, tail, more := strings.Cut(rest, "/")
		n = n.children[comp]
		if n == nil {
			return false
		}
		if n.kind == kindGone {
			return true
		}
		if !more {
			return false
		}
		rest = tail
	}
}
