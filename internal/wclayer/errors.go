package wclayer

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// Sentinel kinds of layer errors. Every error Next, Read and MergeView return
// for bad input is an *Error whose Err matches one of these through errors.Is,
// so callers can tell bad layers from I/O failures: all of them are of kind
// errdefs.ErrInvalidArgument (retrying cannot help).
var (
	// ErrPathTraversal: a name or link target that leaves the layer root
	// ("..", absolute paths, drive letters, \\?\ prefixes).
	ErrPathTraversal = errdefs.New(errdefs.ErrInvalidArgument, "path traversal")
	// ErrInvalidName: a name Windows cannot hold (NUL, invalid UTF-8, empty or
	// "." components, colons outside "file:stream:$DATA", too long).
	ErrInvalidName = errdefs.New(errdefs.ErrInvalidArgument, "invalid name")
	// ErrBadRecord: a malformed tar header or MSWINDOWS.*/LIBARCHIVE.* PAX record.
	ErrBadRecord = errdefs.New(errdefs.ErrInvalidArgument, "bad record")
	// ErrLinkTarget: a hard link whose target is neither earlier in the layer
	// nor in the parent layers, or is a directory.
	ErrLinkTarget = errdefs.New(errdefs.ErrInvalidArgument, "bad hard link target")
	// ErrOrphanStream: an alternate data stream whose file is neither earlier
	// in the layer nor in the parent layers.
	ErrOrphanStream = errdefs.New(errdefs.ErrInvalidArgument, "alternate data stream without its file")
	// ErrNotDirectory: an entry below a path that is a file or a symlink.
	ErrNotDirectory = errdefs.New(errdefs.ErrInvalidArgument, "parent is not a directory")
	// ErrArea: a top-level name outside Files/, Hives/ and UtilityVM/.
	ErrArea = errdefs.New(errdefs.ErrInvalidArgument, "outside the layer areas")
	// ErrUnsupported: valid tar input that Windows layers never carry and
	// cimconv does not convert (opaque whiteouts, device nodes, SDDL records,
	// stream types other than $DATA).
	ErrUnsupported = errdefs.New(errdefs.ErrInvalidArgument, "unsupported")
	// ErrLimit: a size or compression-ratio limit was exceeded.
	ErrLimit = errdefs.New(errdefs.ErrInvalidArgument, "limit exceeded")
	// ErrCorrupt: the compressed or tar stream itself is damaged (checksum,
	// truncation, data after the end of the archive).
	ErrCorrupt = errdefs.New(errdefs.ErrInvalidArgument, "corrupt layer")
)

// Error is a problem with one layer, and where known one of its tar entries.
// Its message is one line: `layer NAME entry "TARNAME": PROBLEM`.
type Error struct {
	Layer   string // the layer's name (WithName), e.g. "sha256:ab12..."
	Entry   string // the entry's name exactly as in the tar; empty when not tied to one entry
	Problem string // what is wrong, one line, human-readable
	Err     error  // the kind (a sentinel above), possibly wrapping a cause
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("layer")
	if e.Layer != "" {
		b.WriteString(" ")
		b.WriteString(e.Layer)
	}
	if e.Entry != "" {
		b.WriteString(" entry ")
		b.WriteString(quote(e.Entry))
	}
	b.WriteString(": ")
	b.WriteString(e.Problem)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// quote renders a name from the tar on one line, escaping control bytes and
// invalid UTF-8 so an error message can never span lines.
func quote(s string) string {
	const max = 300
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strconv.Quote(s)
}
