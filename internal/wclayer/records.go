package wclayer

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/cimconv/cimconv/internal/tarstream"
)

// PAX records written by go-winio's backuptar (the Windows layer exporter).
const (
	recFileAttributes = "MSWINDOWS.fileattr"
	recRawSD          = "MSWINDOWS.rawsd"
	recSDDL           = "MSWINDOWS.sd"
	recOldSDDL        = "SCHILY.xattr.MSWINDOWS.sd"
	recMountPoint     = "MSWINDOWS.mountpoint"
	recEAPrefix       = "MSWINDOWS.xattr."
	recCreationTime   = "LIBARCHIVE.creationtime"
)

const (
	maxSDSize      = 0xFFFF
	maxEABuffer    = 0xFFFF
	maxEANameBytes = 254
	maxEAValue     = 0xFFFF
	maxReparseSize = 0xFFFF

	reparseTagMountPoint = 0xA0000003
	reparseTagSymlink    = 0xA000000C
	symlinkFlagRelative  = 1

	// filetimeEpoch is 1970-01-01 in seconds since 1601-01-01.
	filetimeEpoch = 11644473600
)

// filetime converts a tar time to a Windows FILETIME; zero stays 0.
func filetime(t time.Time) (int64, bool) {
	if t.IsZero() {
		return 0, true
	}
	s := t.Unix() + filetimeEpoch
	if s < 0 || s > math.MaxInt64/10_000_000-1 {
		return 0, false
	}
	return s*1e7 + int64(t.Nanosecond())/100, true
}

// parsePAXTime parses "secs[.frac]" (PAX time syntax, as libarchive writes
// LIBARCHIVE.creationtime), negative seconds allowed. Unlike archive/tar it
// refuses a trailing dot without digits.
func parsePAXTime(s string) (time.Time, bool) {
	if strings.HasSuffix(s, ".") {
		return time.Time{}, false
	}
	return tarstream.ParsePAXTime(s)
}

// checkSD checks the frame of a self-relative SECURITY_DESCRIPTOR:
// 20-byte header {Revision u8 = 1, Sbz1 u8, Control u16 (SE_SELF_RELATIVE
// 0x8000 set), OffsetOwner, OffsetGroup, OffsetSacl, OffsetDacl u32}, each
// offset 0 or inside the buffer.
func checkSD(b []byte) string {
	if len(b) > maxSDSize {
		return "security descriptor of " + strconv.Itoa(len(b)) + " bytes exceeds 65535"
	}
	if len(b) < 20 {
		return "security descriptor shorter than its 20-byte header"
	}
	if b[0] != 1 {
		return "security descriptor revision " + strconv.Itoa(int(b[0])) + ", want 1"
	}
	if binary.LittleEndian.Uint16(b[2:])&0x8000 == 0 {
		return "security descriptor is not self-relative"
	}
	for i := 4; i < 20; i += 4 {
		off := binary.LittleEndian.Uint32(b[i:])
		if off != 0 && (off < 20 || int64(off) >= int64(len(b))) {
			return "security descriptor offset " + strconv.FormatUint(uint64(off), 10) + " out of range"
		}
	}
	return ""
}

// encodeEAs builds a FILE_FULL_EA_INFORMATION chain from MSWINDOWS.xattr.*
// records, sorted by name so the result is deterministic. Each entry is
// {NextEntryOffset u32, Flags u8, NameLength u8, ValueLength u16, name,
// NUL, value}, padded to 4 bytes (the last one too, as go-winio writes it);
// the last entry's NextEntryOffset is 0.
func encodeEAs(recs map[string]string) ([]byte, *problem) {
	var names []string
	for k := range recs {
		if strings.HasPrefix(k, recEAPrefix) {
			names = append(names, k[len(recEAPrefix):])
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	sort.Strings(names)
	var out []byte
	for i, name := range names {
		if name == "" || len(name) > maxEANameBytes {
			return nil, newProblem(ErrBadRecord, "extended attribute name %q: want 1 to %d characters", name, maxEANameBytes)
		}
		for j := 0; j < len(name); j++ {
			if name[j] < 0x20 || name[j] > 0x7e {
				return nil, newProblem(ErrBadRecord, "extended attribute name %q: not printable ASCII", name)
			}
		}
		val, err := base64.StdEncoding.DecodeString(recs[recEAPrefix+name])
		if err != nil {
			return nil, newProblem(ErrBadRecord, "%s%s: bad base64: %v", recEAPrefix, name, err)
		}
		if len(val) > maxEAValue {
			return nil, newProblem(ErrBadRecord, "extended attribute %q: value of %d bytes exceeds %d", name, len(val), maxEAValue)
		}
		size := 8 + len(name) + 1 + len(val)
		padded := (size + 3) &^ 3
		next := uint32(padded)
		if i == len(names)-1 {
			next = 0
		}
		start := len(out)
		out = binary.LittleEndian.AppendUint32(out, next)
		out = append(out, 0, byte(len(name)))
		out = binary.LittleEndian.AppendUint16(out, uint16(len(val)))
		out = append(out, name...)
		out = append(out, 0)
		out = append(out, val...)
		for len(out)-start < padded {
			out = append(out, 0)
		}
		if len(out) > maxEABuffer {
			return nil, newProblem(ErrBadRecord, "extended attributes exceed %d bytes", maxEABuffer)
		}
	}
	return out, nil
}

// EncodeReparsePoint builds the REPARSE_DATA_BUFFER Windows stores for a
// symlink (or, with mountPoint, a junction) to target, as go-winio's
// EncodeReparsePoint does on Windows after filepath.FromSlash:
//
//	ReparseTag u32, ReparseDataLength u16, Reserved u16,
//	SubstituteNameOffset u16, SubstituteNameLength u16,
//	PrintNameOffset u16, PrintNameLength u16,
//	[Flags u32: symlinks only; 1 = relative target]
//	substitute name (NT path) + NUL, print name (target) + NUL, UTF-16LE.
//
// The substitute name is `\??\`-prefixed for drive paths, `\??\UNC\` for
// `\\server` paths, and the target itself for relative ones. Lengths
// exclude the NULs.
func EncodeReparsePoint(target string, mountPoint bool) ([]byte, error) {
	target = strings.ReplaceAll(target, "/", `\`)
	nt, relative := target, false
	switch {
	case strings.HasPrefix(target, `\\?\`):
		nt = `\??\` + target[4:]
	case strings.HasPrefix(target, `\\`):
		nt = `\??\UNC\` + target[2:]
	case len(target) >= 2 && target[1] == ':' && (target[0]|0x20 >= 'a' && target[0]|0x20 <= 'z'):
		nt = `\??\` + target
	default:
		relative = true
	}
	print16 := utf16.Encode([]rune(target))
	nt16 := utf16.Encode([]rune(nt))
	dataLen := 8 + 2*(len(nt16)+1) + 2*(len(print16)+1)
	tag := uint32(reparseTagMountPoint)
	if !mountPoint {
		tag = reparseTagSymlink
		dataLen += 4
	}
	if 8+dataLen > maxReparseSize {
		return nil, &problemError{newProblem(ErrBadRecord, "symlink target of %d characters is too long for a reparse point", len(print16))}
	}
	b := make([]byte, 0, 8+dataLen)
	b = binary.LittleEndian.AppendUint32(b, tag)
	b = binary.LittleEndian.AppendUint16(b, uint16(dataLen))
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(2*len(nt16)))
	b = binary.LittleEndian.AppendUint16(b, uint16(2*(len(nt16)+1)))
	b = binary.LittleEndian.AppendUint16(b, uint16(2*len(print16)))
	if !mountPoint {
		var flags uint32
		if relative {
			flags = symlinkFlagRelative
		}
		b = binary.LittleEndian.AppendUint32(b, flags)
	}
	for _, u := range nt16 {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	b = append(b, 0, 0)
	for _, u := range print16 {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	b = append(b, 0, 0)
	return b, nil
}

// DecodeReparsePoint returns the print name (target) and kind of a symlink
// or mount-point REPARSE_DATA_BUFFER, checking every length and offset.
func DecodeReparsePoint(b []byte) (target string, mountPoint bool, err error) {
	bad := func(what string) (string, bool, error) {
		return "", false, &problemError{newProblem(ErrBadRecord, "reparse buffer: %s", what)}
	}
	if len(b) < 16 {
		return bad("too short")
	}
	tag := binary.LittleEndian.Uint32(b)
	dataLen := int(binary.LittleEndian.Uint16(b[4:]))
	if 8+dataLen > len(b) {
		return bad("data length beyond the buffer")
	}
	pathBuf := b[16 : 8+dataLen]
	switch tag {
	case reparseTagMountPoint:
		mountPoint = true
	case reparseTagSymlink:
		if len(pathBuf) < 4 {
			return bad("too short for a symlink")
		}
		pathBuf = pathBuf[4:]
	default:
		return bad("tag " + strconv.FormatUint(uint64(tag), 16) + " is neither a symlink nor a mount point")
	}
	off := int(binary.LittleEndian.Uint16(b[12:]))
	n := int(binary.LittleEndian.Uint16(b[14:]))
	if off%2 != 0 || n%2 != 0 || off+n > len(pathBuf) {
		return bad("print name out of range")
	}
	u := make([]uint16, n/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(pathBuf[off+2*i:])
	}
	return string(utf16.Decode(u)), mountPoint, nil
}

// problemError lets helpers return a kind-carrying error outside a Reader.
type problemError struct{ p *problem }

func (e *problemError) Error() string { return e.p.msg }
func (e *problemError) Unwrap() error { return e.p.kind }
