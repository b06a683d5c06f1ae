package wclayer

// Limits bound what a layer may expand to, against decompression bombs.
// A zero field takes its value from DefaultLimits.
type Limits struct {
	// MaxFileSize is the largest file or stream, in bytes.
	MaxFileSize int64
	// MaxTotalSize is the largest uncompressed tar, in bytes.
	MaxTotalSize int64
	// MaxRatio is the largest uncompressed/compressed ratio, enforced only
	// once RatioAfter uncompressed bytes were produced (small layers of
	// zeros legitimately compress far better).
	MaxRatio float64
	// RatioAfter is the uncompressed size past which MaxRatio is enforced.
	RatioAfter int64
}

// DefaultLimits admit real 5–15 GiB Windows base layers with a wide margin.
var DefaultLimits = Limits{
	MaxFileSize:  64 << 30,
	MaxTotalSize: 256 << 30,
	MaxRatio:     1000,
	RatioAfter:   1 << 30,
}

func (l Limits) withDefaults() Limits {
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultLimits.MaxFileSize
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = DefaultLimits.MaxTotalSize
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultLimits.MaxRatio
	}
	if l.RatioAfter <= 0 {
		l.RatioAfter = DefaultLimits.RatioAfter
	}
	return l
}

// Option configures a Reader (and MergeView).
type Option func(*options)

type options struct {
	name         string
	limits       Limits
	parentLookup func(path string) bool
	isBase       bool
}

// WithName sets the layer's name used in every error, e.g. its digest.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithLimits sets the decompression-bomb limits; zero fields keep their defaults.
func WithLimits(l Limits) Option { return func(o *options) { o.limits = l } }

// WithParentLookup gives a function that reports whether a path exists in
// the parent layers (compared case-insensitively). It lets hard links and
// alternate streams refer to a parent's file. Without it, nothing is assumed
// to exist below the layer.
func WithParentLookup(f func(path string) bool) Option {
	return func(o *options) { o.parentLookup = f }
}

// WithBase declares whether the layer is a base layer (no parents); a base
// layer ignores any parent lookup.
func WithBase(isBase bool) Option { return func(o *options) { o.isBase = isBase } }
