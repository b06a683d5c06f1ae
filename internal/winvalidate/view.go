package winvalidate

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/cimconv/cimconv/internal/fsview"
)

// ErrNeedsWindows is returned by the mount functions on other systems.
var ErrNeedsWindows = errors.New("mounting a CIM needs Windows (CimFS)")

// Windows FILE_ATTRIBUTE_* bits the walk interprets.
const (
	attrDirectory    = 0x10
	attrReparsePoint = 0x400
)

// streamKind is the kind of one Win32 backup stream (WIN32_STREAM_ID.dwStreamId).
type streamKind int

const (
	streamData     streamKind = iota // BACKUP_DATA: the default stream
	streamAltData                    // BACKUP_ALTERNATE_DATA, named ":name:$DATA"
	streamSecurity                   // BACKUP_SECURITY_DATA: self-relative SD
	streamEA                         // BACKUP_EA_DATA: FILE_FULL_EA_INFORMATION
	streamReparse                    // BACKUP_REPARSE_DATA: REPARSE_DATA_BUFFER
	streamSparse                     // BACKUP_SPARSE_BLOCK: int64 offset, then data
	streamOther                      // anything else (object id, property data, ...)
)

// backupStream is one stream of a file as BackupRead returns it.
type backupStream struct {
	kind streamKind
	name string // alternate streams only, as ":name:$DATA"
	r    io.Reader
}

// fileBasic is what the volume reports about a path before its streams.
type fileBasic struct {
	attributes    uint32
	lastWriteTime int64 // FILETIME, 100 ns since 1601
	endOfFile     int64 // default stream length (sparse files end in zeros)
}

// volume is a mounted (or any) tree read with backup semantics.
type volume interface {
	// readDir lists the names in directory rel ("" is the root).
	readDir(ctx context.Context, rel string) ([]string, error)
	// open returns a path's basic information and an iterator over its
	// backup streams (nil, io.EOF at the end). close releases the handle.
	open(ctx context.Context, rel string) (fileBasic, func() (*backupStream, error), func() error, error)
}

// walk lists every path below the root of v (the root itself excluded) in
// the conventions of wclayer.MergeView: directories have no size or hash,
// symlinks (reparse points) are not descended into and carry their reparse
// buffer, files carry size and SHA-256 of the default stream, and alternate
// streams are listed by name without ":$DATA".
func walk(ctx context.Context, v volume, skip func(rel string) bool) ([]fsview.Entry, error) {
	var out []fsview.Entry
	var visit func(dir string) error
	visit = func(dir string) error {
		names, err := v.readDir(ctx, dir)
		if err != nil {
			return fmt.Errorf("list %q: %w", dirLabel(dir), err)
		}
		sort.Strings(names)
		for _, n := range names {
			if err := ctx.Err(); err != nil {
				return err
			}
			rel := n
			if dir != "" {
				rel = dir + "/" + n
			}
			if skip != nil && skip(rel) {
				continue
			}
			e, err := readEntry(ctx, v, rel)
			if err != nil {
				return err
			}
			out = append(out, e)
			if e.Type == fsview.TypeDir {
				if err := visit(rel); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := visit(""); err != nil {
		return nil, err
	}
	fsview.Sort(out)
	return out, nil
}

func dirLabel(dir string) string {
	if dir == "" {
		return "/"
	}
	return dir
}

// readEntry turns one path's basic info and backup streams into an entry.
func readEntry(ctx context.Context, v volume, rel string) (_ fsview.Entry, retErr error) {
	basic, next, closeFn, err := v.open(ctx, rel)
	if err != nil {
		return fsview.Entry{}, fmt.Errorf("open %q: %w", rel, err)
	}
	defer func() {
		if err := closeFn(); err != nil && retErr == nil {
			retErr = fmt.Errorf("close %q: %w", rel, err)
		}
	}()
	e := fsview.Entry{Path: rel, Attributes: basic.attributes, LastWriteTime: basic.lastWriteTime}
	switch {
	case basic.attributes&attrReparsePoint != 0:
		e.Type = fsview.TypeSymlink
	case basic.attributes&attrDirectory != 0:
		e.Type = fsview.TypeDir
	default:
		e.Type = fsview.TypeFile
	}
	data := &zeroFillHash{h: sha256.New()}
	streams := map[string]fsview.Stream{}
	for {
		s, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return e, fmt.Errorf("read %q: %w", rel, err)
		}
		switch s.kind {
		case streamData:
			if _, err := data.writeAt(data.n, s.r); err != nil {
				return e, fmt.Errorf("read %q: %w", rel, err)
			}
		case streamSparse:
			var off int64
			if err := binary.Read(s.r, binary.LittleEndian, &off); err != nil {
				return e, fmt.Errorf("read %q: sparse block header: %w", rel, err)
			}
			if _, err := data.writeAt(off, s.r); err != nil {
				return e, fmt.Errorf("read %q: sparse block at %d: %w", rel, off, err)
			}
		case streamAltData:
			name, err := streamName(s.name)
			if err != nil {
				return e, fmt.Errorf("read %q: %w", rel, err)
			}
			h := sha256.New()
			n, err := io.Copy(h, s.r)
			if err != nil {
				return e, fmt.Errorf("read %q stream %q: %w", rel, name, err)
			}
			streams[fsview.FoldPath(name)] = fsview.Stream{Name: name, Size: n, SHA256: fmt.Sprintf("%x", h.Sum(nil))}
		case streamSecurity:
			if e.SD, err = readBase64(s.r); err != nil {
				return e, fmt.Errorf("read %q security descriptor: %w", rel, err)
			}
		case streamEA:
			if e.EA, err = readBase64(s.r); err != nil {
				return e, fmt.Errorf("read %q EAs: %w", rel, err)
			}
		case streamReparse:
			if e.Reparse, err = readBase64(s.r); err != nil {
				return e, fmt.Errorf("read %q reparse data: %w", rel, err)
			}
		default:
			if _, err := io.Copy(io.Discard, s.r); err != nil {
				return e, fmt.Errorf("read %q: %w", rel, err)
			}
		}
	}
	if e.Type == fsview.TypeSymlink && e.Reparse != "" {
		// Typed by the reparse buffer's tag, as the CIM and layer views are.
		if b, err := base64.StdEncoding.DecodeString(e.Reparse); err == nil {
			e.Type, e.ReparseTag = fsview.ReparseType(fsview.ReparseBufferTag(b))
		}
	}
	if e.Type == fsview.TypeFile {
		if basic.endOfFile > data.n {
			data.fillTo(basic.endOfFile)
		}
		e.Size = data.n
		e.SHA256 = fmt.Sprintf("%x", data.h.Sum(nil))
	}
	for _, s := range streams {
		e.Streams = append(e.Streams, s)
	}
	sort.Slice(e.Streams, func(i, j int) bool { return e.Streams[i].Name < e.Streams[j].Name })
	return e, nil
}

// streamName turns BackupRead's ":name:$DATA" into "name".
func streamName(raw string) (string, error) {
	s, ok := strings.CutPrefix(raw, ":")
	if ok {
		s, ok = strings.CutSuffix(s, ":$DATA")
	}
	if !ok || s == "" || strings.ContainsAny(s, ":/\\") {
		return "", fmt.Errorf("alternate stream name %q: want \":name:$DATA\"", raw)
	}
	return s, nil
}

func readBase64(r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil || len(b) == 0 {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// zeroFillHash hashes a default stream given as data and sparse blocks:
// the gaps between blocks read as zeros.
type zeroFillHash struct {
	h hash.Hash
	n int64
}

func (z *zeroFillHash) writeAt(off int64, r io.Reader) (int64, error) {
	if off < z.n {
		return 0, fmt.Errorf("offset %d before %d bytes already read", off, z.n)
	}
	z.fillTo(off)
	n, err := io.Copy(z.h, r)
	z.n += n
	return n, err
}

func (z *zeroFillHash) fillTo(off int64) {
	var zeros [32 << 10]byte
	for z.n < off {
		k := int64(len(zeros))
		if off-z.n < k {
			k = off - z.n
		}
		z.h.Write(zeros[:k])
		z.n += k
	}
}

// cleanRel checks a relative path used with a volume.
func cleanRel(rel string) (string, error) {
	if rel == "" {
		return "", nil
	}
	c := path.Clean(rel)
	if c != rel || strings.HasPrefix(c, "../") || c == ".." || strings.HasPrefix(c, "/") {
		return "", fmt.Errorf("path %q is not a clean relative path", rel)
	}
	return c, nil
}
