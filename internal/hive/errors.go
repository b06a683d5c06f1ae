package hive

import (
	"fmt"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// The errors are errdefs.ErrInvalidArgument: the input is wrong, and
// retrying cannot help.
var (
	// ErrCorrupt is wrapped by every error about a malformed hive.
	ErrCorrupt = errdefs.New(errdefs.ErrInvalidArgument, "corrupt registry hive")
	// ErrDirty is returned for a hive whose sequence numbers differ: it has
	// changes still in its transaction logs (.LOG1/.LOG2), which this
	// package does not replay.
	ErrDirty = errdefs.New(errdefs.ErrInvalidArgument, "registry hive is dirty: it has pending transaction-log data (sequence numbers differ); let Windows replay its .LOG1/.LOG2 files first")
	// ErrChecksum is returned when the base block checksum does not match.
	ErrChecksum = errdefs.New(errdefs.ErrInvalidArgument, "registry hive base block checksum mismatch")
	// ErrMerge is wrapped by errors about a base/delta pair that cannot be
	// merged (duplicate names, a delta deeper than Windows allows).
	ErrMerge = errdefs.New(errdefs.ErrInvalidArgument, "cannot merge registry hives")
)

// FormatError locates a format problem: the byte offset in the file (-1 when
// it is about the whole file) and what is wrong there.
type FormatError struct {
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Offset < 0 {
		return "corrupt registry hive: " + e.Msg
	}
	return fmt.Sprintf("corrupt registry hive at byte %#x: %s", e.Offset, e.Msg)
}

func (e *FormatError) Unwrap() error { return ErrCorrupt }

// corrupt builds a FormatError at a cell offset (relative to the first bin).
func corrupt(cellOff uint32, format string, args ...any) error {
	return &FormatError{Offset: int64(cellOff) + headerSize, Msg: fmt.Sprintf(format, args...)}
}

func corruptFile(format string, args ...any) error {
	return &FormatError{Offset: -1, Msg: fmt.Sprintf(format, args...)}
}
