package hive

import (
	"context"
	"fmt"
)

// SecuritySource says which security descriptor a key present in both the
// base and the delta keeps.
type SecuritySource int

const (
	// SecurityDelta keeps the delta's descriptor: the layer above saw and
	// wrote the key last (the default; docs/hive-format.md).
	SecurityDelta SecuritySource = iota
	// SecurityBase keeps the base's descriptor.
	SecurityBase
)

// MergeOption configures Merge.
type MergeOption func(*mergeOptions)

type mergeOptions struct {
	security SecuritySource
}

// WithSecurityFrom chooses the descriptor of keys present on both sides.
func WithSecurityFrom(s SecuritySource) MergeOption {
	return func(o *mergeOptions) { o.security = s }
}

// Merge applies delta hives, in order, onto base and returns the merged,
// flat tree (no layered keys left). Keys of base that no delta touches are
// shared with base and stay unloaded. The rules, from the regf layered-key
// semantics (docs/hive-format.md):
//   - a tombstone key deletes the key below with its subtree; a tombstone
//     value deletes the value below;
//   - supersede-tree replaces the key below with the delta's subtree;
//   - supersede-local replaces the values (and class) below and merges
//     subkeys;
//   - otherwise a delta value replaces the same-named value below, other
//     values below stay, and subkeys merge;
//   - inherit-class takes the class of the key below, else the delta's
//     class applies;
//   - the merged key's last-write time is the newer of the two.
//
// Names match case-insensitively (Windows upper-case table); a merged key
// keeps the base's spelling, a superseding subtree brings its own.
func Merge(ctx context.Context, base *Key, deltas []*Key, opts ...MergeOption) (*Key, error) {
	var o mergeOptions
	for _, opt := range opts {
		opt(&o)
	}
	m := &merger{ctx: ctx, o: o}
	out := base
	for i, d := range deltas {
		if d.Layer == LayerTombstone {
			return nil, fmt.Errorf("%w: delta %d deletes the root key", ErrMerge, i+1)
		}
		r, err := m.key(out, d, 0)
		if err != nil {
			return nil, fmt.Errorf("delta %d: %w", i+1, err)
		}
		r.Name = out.Name
		out = r
	}
	return out, nil
}

type merger struct {
	ctx context.Context
	o   mergeOptions
	n   int
}

// key merges delta key d onto b (nil when there is none below). It returns
// nil when the result is deleted.
func (m *merger) key(b, d *Key, depth int) (*Key, error) {
	if d.Layer == LayerTombstone {
		return nil, nil
	}
	if b == nil || d.Layer == LayerSupersedeTree {
		return m.flatten(b, d, depth)
	}
	out, err := m.copyKey(b, d, depth)
	if err != nil {
		return nil, err
	}
	out.Name = b.Name
	out.LastWrite = max(b.LastWrite, d.LastWrite)
	if d.Layer == LayerSupersedeLocal {
		out.Values = liveValues(d.Values)
	} else {
		out.Values = mergeValues(b.Values, d.Values)
	}
	if out.Subkeys, err = m.subkeys(b, d, depth, false); err != nil {
		return nil, err
	}
	return out, nil
}

// flatten copies d's subtree without its layered keys: tombstones vanish,
// the rest becomes plain keys. b is the key below, if any; it only lends its
// class to an inherit-class key (and its descendants to theirs).
func (m *merger) flatten(b, d *Key, depth int) (*Key, error) {
	if d.Layer == LayerTombstone {
		return nil, nil
	}
	out, err := m.copyKey(b, d, depth)
	if err != nil {
		return nil, err
	}
	out.Values = liveValues(d.Values)
	if out.Subkeys, err = m.subkeys(b, d, depth, true); err != nil {
		return nil, err
	}
	return out, nil
}

// copyKey loads b and d and returns d's key fields with the class and
// descriptor resolved against b.
func (m *merger) copyKey(b, d *Key, depth int) (*Key, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: key %q is deeper than %d levels", ErrMerge, d.Name, maxDepth)
	}
	if m.n++; m.n%4096 == 0 {
		if err := m.ctx.Err(); err != nil {
			return nil, err
		}
	}
	if err := d.Load(); err != nil {
		return nil, err
	}
	out := &Key{
		Name:       d.Name,
		Class:      d.Class,
		LastWrite:  d.LastWrite,
		Flags:      d.Flags,
		AccessBits: d.AccessBits,
		Security:   d.Security,
	}
	if b != nil {
		if err := b.Load(); err != nil {
			return nil, err
		}
		if d.InheritClass {
			out.Class = b.Class
		}
		// A key on both sides, merged or superseding the one below: its
		// descriptor is the delta's unless the option says the base's.
		if out.Security == nil || (m.o.security == SecurityBase && b.Security != nil) {
			out.Security = b.Security
		}
	}
	return out, nil
}

// subkeys merges the subkey lists of b and d. With replace (a superseding
// subtree), b's subkeys only lend classes and do not survive on their own.
func (m *merger) subkeys(b, d *Key, depth int, replace bool) ([]*Key, error) {
	ds, err := sortedSubkeys(d)
	if err != nil {
		return nil, err
	}
	var bs []*Key
	if b != nil {
		if bs, err = sortedSubkeys(b); err != nil {
			return nil, err
		}
	}
	out := make([]*Key, 0, len(bs)+len(ds))
	i, j := 0, 0
	for i < len(bs) || j < len(ds) {
		c := 0
		switch {
		case i == len(bs):
			c = 1
		case j == len(ds):
			c = -1
		default:
			c = compareKeys(bs[i], ds[j])
		}
		var below, delta *Key
		switch {
		case c < 0:
			below = bs[i]
			i++
		case c > 0:
			delta = ds[j]
			j++
		default:
			below, delta = bs[i], ds[j]
			i, j = i+1, j+1
		}
		if delta == nil {
			if !replace {
				out = append(out, below)
			}
			continue
		}
		var k *Key
		if replace {
			k, err = m.flatten(below, delta, depth+1)
		} else {
			k, err = m.key(below, delta, depth+1)
		}
		if err != nil {
			return nil, err
		}
		if k != nil {
			out = append(out, k)
		}
	}
	return out, nil
}

// liveValues drops tombstones.
func liveValues(vs []Value) []Value {
	out := make([]Value, 0, len(vs))
	for _, v := range vs {
		if !v.Tombstone {
			out = append(out, v)
		}
	}
	return out
}

// mergeValues keeps the base's values in their order, each replaced in place
// by the delta's same-named value or deleted by its tombstone, then appends
// the delta's new values in the delta's order (docs/hive-format.md).
func mergeValues(base, delta []Value) []Value {
	idx := make(map[string]int, len(delta))
	for i, v := range delta {
		idx[foldString(encodeName(v.Name))] = i
	}
	used := make([]bool, len(delta))
	out := make([]Value, 0, len(base)+len(delta))
	for _, v := range base {
		i, ok := idx[foldString(encodeName(v.Name))]
		if !ok {
			out = append(out, v)
			continue
		}
		used[i] = true
		if !delta[i].Tombstone {
			out = append(out, delta[i])
		}
	}
	for i, v := range delta {
		if !used[i] && !v.Tombstone {
			out = append(out, v)
		}
	}
	return out
}
