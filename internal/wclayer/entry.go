package wclayer

import "fmt"

// EntryType is the kind of a layer entry.
type EntryType uint8

const (
	TypeFile     EntryType = iota + 1 // a regular file (default data stream)
	TypeDir                           // a directory
	TypeSymlink                       // a symlink or junction (reparse point)
	TypeHardLink                      // a second name for an earlier file
	TypeStream                        // an alternate data stream of a file
	TypeWhiteout                      // a deletion of a parent layer's path
)

var typeNames = [...]string{"", "file", "dir", "symlink", "hardlink", "stream", "whiteout"}

func (t EntryType) String() string {
	if int(t) < len(typeNames) && t != 0 {
		return typeNames[t]
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Windows FILE_ATTRIBUTE_* values used by layers.
const (
	AttrReadOnly     uint32 = 0x1
	AttrHidden       uint32 = 0x2
	AttrSystem       uint32 = 0x4
	AttrDirectory    uint32 = 0x10
	AttrArchive      uint32 = 0x20
	AttrNormal       uint32 = 0x80
	AttrSparse       uint32 = 0x200
	AttrReparsePoint uint32 = 0x400
)

// Entry is one validated entry of a Windows layer tar.
type Entry struct {
	Type EntryType
	// TarName is the name exactly as it appears in the tar (used in errors).
	TarName string
	// Path is validated, '/'-separated, relative to the layer root, without a
	// trailing '/', spelled as in the tar (e.g. "Files/Windows/a.txt").
	// TypeStream: the owning file's path. TypeWhiteout: the deleted path.
	Path string
	// StreamName is the alternate stream's name without ":$DATA" (TypeStream).
	StreamName string
	// Linkname: TypeHardLink: the normalized target path (same rules as Path);
	// TypeSymlink: the raw target as in the tar (e.g. `C:\x` or `..\y`).
	Linkname string
	// Size is the number of data bytes of a file or stream; 0 otherwise.
	Size int64
	// Attributes are FILE_ATTRIBUTE_* bits from MSWINDOWS.fileattr; when the
	// record is absent: AttrDirectory for dirs, AttrArchive for files and
	// symlinks, 0 for streams, hard links and whiteouts. Dirs always include
	// AttrDirectory, symlinks AttrReparsePoint; other entries never carry
	// AttrReparsePoint (as hcsshim's importer clears it).
	Attributes uint32
	// SecurityDescriptor is MSWINDOWS.rawsd decoded: a self-relative SD, nil if absent.
	SecurityDescriptor []byte
	// ExtendedAttributes are the MSWINDOWS.xattr.* records encoded as a
	// FILE_FULL_EA_INFORMATION chain (sorted by name, entries 4-byte aligned),
	// nil if none.
	ExtendedAttributes []byte
	// ReparseData is, for TypeSymlink, the full REPARSE_DATA_BUFFER
	// (IO_REPARSE_TAG_SYMLINK, or IO_REPARSE_TAG_MOUNT_POINT when
	// MSWINDOWS.mountpoint is set) built from Linkname.
	ReparseData []byte
	// Windows FILETIMEs (100 ns ticks since 1601-01-01 UTC), 0 when absent.
	// CreationTime comes from LIBARCHIVE.creationtime, the others from the
	// tar header's mtime, ctime and atime.
	CreationTime, LastWriteTime, ChangeTime, LastAccessTime int64
}

// Stats counts what a Reader has seen so far.
type Stats struct {
	Files, Dirs, Symlinks, HardLinks, Streams, Whiteouts int64
	// DeltaHives counts Hives/*_Delta files (non-base layers).
	DeltaHives int64
	// DataBytes is the sum of file and stream sizes.
	DataBytes int64
	// BytesIn is what was read from the source (compressed); BytesOut the
	// uncompressed tar bytes, padding included.
	BytesIn, BytesOut int64
	// Compression is the detected compression.
	Compression Compression
}

// Count returns the number of entries of type t.
func (s Stats) Count(t EntryType) int64 {
	switch t {
	case TypeFile:
		return s.Files
	case TypeDir:
		return s.Dirs
	case TypeSymlink:
		return s.Symlinks
	case TypeHardLink:
		return s.HardLinks
	case TypeStream:
		return s.Streams
	case TypeWhiteout:
		return s.Whiteouts
	}
	return 0
}

// Compression is the compression of a layer blob.
type Compression uint8

const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "uncompressed"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}
