package wclayer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cimconv/cimconv/internal/upcase"
)

// Windows limits on names, in UTF-16 code units.
const (
	maxComponentUnits = 255
	maxPathUnits      = 32767
	whiteoutPrefix    = ".wh."
	opaqueWhiteout    = ".wh..wh..opq"
	streamTypeData    = "$DATA"
)

// problem is a validation failure before it is tied to a layer and entry.
type problem struct {
	kind error
	msg  string
}

func newProblem(kind error, format string, args ...any) *problem {
	return &problem{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// utf16Len is the length of s in UTF-16 code units (s is valid UTF-8).
func utf16Len(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			n++
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
		i += size
	}
	return n
}

// cleanPath validates a tar name (or hard-link target) and returns it as a
// '/'-separated path relative to the layer root, without a trailing '/'.
//
// Backslashes count as separators because the Windows importer passes names
// through filepath.FromSlash, where `a\..\..\x` would climb out of the layer.
// A leading "./" (written by some tar tools) is dropped. Colons are refused
// in directory components; the caller parses the last component.
//
// Only directory components are held to NTFS's 255 units here: the last one
// may carry a whiteout's ".wh." or a stream's ":name:$DATA", which are not
// part of any NTFS name, so the caller applies checkLengths once it has
// parsed them off.
func cleanPath(raw string, trailingSlashOK bool) (string, *problem) {
	if raw == "" {
		return "", newProblem(ErrInvalidName, "empty name")
	}
	if strings.IndexByte(raw, 0) >= 0 {
		return "", newProblem(ErrInvalidName, "NUL byte in name")
	}
	if !utf8.ValidString(raw) {
		return "", newProblem(ErrInvalidName, "name is not valid UTF-8")
	}
	for _, pre := range [...]string{`\\?\`, `//?/`, `\??\`, `\\.\`, `//./`} {
		if strings.HasPrefix(raw, pre) {
			return "", newProblem(ErrPathTraversal, "device path prefix %q", pre)
		}
	}
	p := strings.ReplaceAll(raw, `\`, "/")
	for strings.HasPrefix(p, "./") {
		p = p[2:]
	}
	if trailingSlashOK && len(p) > 1 && strings.HasSuffix(p, "/") {
		p = p[:len(p)-1]
	}
	if strings.HasPrefix(p, "/") {
		return "", newProblem(ErrPathTraversal, "absolute path")
	}
	if len(p) >= 2 && p[1] == ':' && (p[0]|0x20 >= 'a' && p[0]|0x20 <= 'z') {
		return "", newProblem(ErrPathTraversal, "drive letter %q", p[:2])
	}
	if p == "" || p == "." {
		return "", newProblem(ErrInvalidName, "name of the layer root")
	}
	rest := p
	for {
		comp, tail, more := strings.Cut(rest, "/")
		switch comp {
		case "":
			return "", newProblem(ErrInvalidName, "empty path component")
		case ".":
			return "", newProblem(ErrInvalidName, `"." path component`)
		case "..":
			return "", newProblem(ErrPathTraversal, `".." path component`)
		}
		if !more {
			break
		}
		if strings.IndexByte(comp, ':') >= 0 {
			return "", newProblem(ErrInvalidName, "colon in directory name %q", comp)
		}
		if n := utf16Len(comp); n > maxComponentUnits {
			return "", newProblem(ErrInvalidName, "name component of %d UTF-16 units exceeds %d", n, maxComponentUnits)
		}
		rest = tail
	}
	return p, nil
}

// checkLengths applies Windows' length limits to what an entry names, once
// its tar name is parsed: p is the file's path (for a whiteout, the deleted
// path), stream its alternate stream's name or "". NTFS limits the file
// name and the stream name to 255 units each, and a path (with the
// ":stream:$DATA" that names a stream) to 32767.
func checkLengths(p, stream string) *problem {
	name := p[strings.LastIndexByte(p, '/')+1:]
	if n := utf16Len(name); n > maxComponentUnits {
		return newProblem(ErrInvalidName, "file name of %d UTF-16 units exceeds %d", n, maxComponentUnits)
	}
	total := utf16Len(p)
	if stream != "" {
		n := utf16Len(stream)
		if n > maxComponentUnits {
			return newProblem(ErrInvalidName, "stream name of %d UTF-16 units exceeds %d", n, maxComponentUnits)
		}
		total += len(":") + n + len(":"+streamTypeData)
	}
	if total > maxPathUnits {
		return newProblem(ErrInvalidName, "path of %d UTF-16 units exceeds %d", total, maxPathUnits)
	}
	return nil
}

// splitStream parses a last component "file:stream:$DATA" (the only form a
// colon may take). ok is false when the component has no colon.
func splitStream(last string) (file, stream string, ok bool, pr *problem) {
	if strings.IndexByte(last, ':') < 0 {
		return "", "", false, nil
	}
	parts := strings.Split(last, ":")
	switch {
	case len(parts) == 2:
		return "", "", true, newProblem(ErrInvalidName, "alternate stream name without a stream type (want file:stream:$DATA)")
	case len(parts) != 3:
		return "", "", true, newProblem(ErrInvalidName, "too many colons (want file:stream:$DATA)")
	case parts[2] != streamTypeData:
		return "", "", true, newProblem(ErrUnsupported, "stream type %q (only $DATA streams are supported)", parts[2])
	case parts[0] == "":
		return "", "", true, newProblem(ErrInvalidName, "alternate stream without a file name")
	case parts[1] == "":
		return "", "", true, newProblem(ErrInvalidName, "empty alternate stream name")
	}
	return parts[0], parts[1], true, nil
}

// fold is the key paths are compared by, case-insensitively: upcase.Fold,
// the table the CIM writer stores in its images, so the merged view has an
// entry for every entry a CIM of the layers has (the Windows importer's own
// comparison has not been observed; see internal/upcase).
func fold(s string) string { return upcase.Fold(s) }

func utf8Valid(s string) bool { return utf8.ValidString(s) }
