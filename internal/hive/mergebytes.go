package hive

import (
	"context"
	"fmt"
	"io"
)

// Input is one hive's bytes with a name for errors (a file path, a path in
// a layer).
type Input struct {
	Name string
	Data []byte
}

// MergeHives merges delta hives onto a base hive and returns the merged,
// flat hive's bytes. Errors name the input they are about.
func MergeHives(ctx context.Context, base Input, deltas []Input, opts ...MergeOption) ([]byte, error) {
	m, size, err := mergeInputs(ctx, base, deltas, opts)
	if err != nil {
		return nil, err
	}
	out, err := Marshal(m, WithSizeHint(size))
	if err != nil {
		return nil, fmt.Errorf("write merged hive of %s: %w", base.Name, err)
	}
	return out, nil
}

// MergeHivesTo is MergeHives writing to out (a new, empty file) with WriteAt,
// so the merged hive is never all in memory. It returns the hive's size.
func MergeHivesTo(ctx context.Context, out io.WriterAt, base Input, deltas []Input, opts ...MergeOption) (int64, error) {
	m, _, err := mergeInputs(ctx, base, deltas, opts)
	if err != nil {
		return 0, err
	}
	n, err := WriteAt(out, m)
	if err != nil {
		return 0, fmt.Errorf("write merged hive of %s: %w", base.Name, err)
	}
	return n, nil
}

func mergeInputs(ctx context.Context, base Input, deltas []Input, opts []MergeOption) (*Key, int, error) {
	root, err := openRoot(base)
	if err != nil {
		return nil, 0, err
	}
	size := len(base.Data)
	roots := make([]*Key, 0, len(deltas))
	for _, d := range deltas {
		r, err := openRoot(d)
		if err != nil {
			return nil, 0, err
		}
		roots = append(roots, r)
		size += len(d.Data)
	}
	m, err := Merge(ctx, root, roots, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("merge %s with %d delta(s): %w", base.Name, len(deltas), err)
	}
	return m, size, nil
}

func openRoot(in Input) (*Key, error) {
	h, err := Open(in.Data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Name, err)
	}
	r, err := h.Root()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Name, err)
	}
	return r, nil
}
