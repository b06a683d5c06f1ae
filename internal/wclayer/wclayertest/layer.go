package wclayertest

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression selects how Bytes and WriteTo compress the tar.
type Compression int

const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

// Ext is the file extension of a layer with this compression.
func (c Compression) Ext() string {
	switch c {
	case Gzip:
		return ".tar.gz"
	case Zstd:
		return ".tar.zst"
	}
	return ".tar"
}

// DefaultTime is the time every entry gets unless WithTimes says otherwise
// (100 ns precision, like a FILETIME).
var DefaultTime = time.Date(2024, 5, 14, 9, 30, 15, 123456700, time.UTC)

// Mode bits go-winio's backuptar writes (type bits only, no permissions).
const (
	modeDir     = 0o40000
	modeRegular = 0o100000
	modeSymlink = 0o120000
)

type item struct {
	hdr  *tar.Header
	data []byte
}

// Layer is a Windows layer under construction. Methods append entries in
// call order and return the Layer for chaining. File, Dir, Symlink,
// HardLink and Whiteout first add any parent directory this layer has not
// listed yet (case-insensitively), as the Windows exporter lists every
// directory of the layer before its contents; NoAutoDirs turns that off.
type Layer struct {
	items    []item
	dirs     map[string]bool
	autoDirs bool
}

// NewLayer returns an empty layer.
func NewLayer() *Layer { return &Layer{dirs: map[string]bool{}, autoDirs: true} }

// NoAutoDirs stops adding missing parent directories (for tests of odd input).
func (l *Layer) NoAutoDirs() *Layer { l.autoDirs = false; return l }

type entryOpts struct {
	sd         []byte
	attrs      *uint32
	eas        map[string][]byte
	t          time.Time
	mountPoint bool
}

// EntryOption sets a property of one entry.
type EntryOption func(*entryOpts)

// WithSD sets the security descriptor (nil: no MSWINDOWS.rawsd record).
// The default is SDAdminsFull.
func WithSD(sd []byte) EntryOption { return func(o *entryOpts) { o.sd = sd } }

// WithAttributes sets MSWINDOWS.fileattr (default 0x10 for dirs, 0x20 for
// files, 0x420 for file symlinks).
func WithAttributes(a uint32) EntryOption { return func(o *entryOpts) { o.attrs = &a } }

// WithEA adds an extended attribute (MSWINDOWS.xattr.<name>).
func WithEA(name string, value []byte) EntryOption {
	return func(o *entryOpts) {
		if o.eas == nil {
			o.eas = map[string][]byte{}
		}
		o.eas[name] = value
	}
}

// WithTimes sets all four times of the entry.
func WithTimes(t time.Time) EntryOption { return func(o *entryOpts) { o.t = t } }

// WithMountPoint makes a Symlink a junction (MSWINDOWS.mountpoint).
func WithMountPoint() EntryOption { return func(o *entryOpts) { o.mountPoint = true } }

func collect(opts []EntryOption) entryOpts {
	o := entryOpts{sd: SDAdminsFull, t: DefaultTime}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// basicHeader is what backuptar.BasicInfoHeader writes: PAX format, the
// three tar times, MSWINDOWS.fileattr and LIBARCHIVE.creationtime.
func basicHeader(name string, typ byte, size int64, attrs uint32, o entryOpts) *tar.Header {
	h := &tar.Header{
		Format:     tar.FormatPAX,
		Name:       name,
		Typeflag:   typ,
		Size:       size,
		ModTime:    o.t,
		AccessTime: o.t,
		ChangeTime: o.t,
		PAXRecords: map[string]string{
			"MSWINDOWS.fileattr":      strconv.FormatUint(uint64(attrs), 10),
			"LIBARCHIVE.creationtime": paxTime(o.t),
		},
	}
	if o.sd != nil {
		h.PAXRecords["MSWINDOWS.rawsd"] = base64.StdEncoding.EncodeToString(o.sd)
	}
	for k, v := range o.eas {
		h.PAXRecords["MSWINDOWS.xattr."+k] = base64.StdEncoding.EncodeToString(v)
	}
	return h
}

// paxTime formats secs[.frac] without trailing zeros, as backuptar does.
func paxTime(t time.Time) string {
	s, ns := t.Unix(), t.Nanosecond()
	if ns == 0 {
		return strconv.FormatInt(s, 10)
	}
	if s < 0 {
		return strings.TrimRight(fmt.Sprintf("-%d.%09d", -(s+1), 1e9-ns), "0")
	}
	return strings.TrimRight(fmt.Sprintf("%d.%09d", s, ns), "0")
}

func (l *Layer) parents(p string) {
	if !l.autoDirs {
		return
	}
	dir := path.Dir(p)
	if dir == "." || l.dirs[strings.ToUpper(dir)] {
		return
	}
	l.parents(dir)
	l.Dir(dir)
}

// Dir adds a directory.
func (l *Layer) Dir(p string, opts ...EntryOption) *Layer {
	l.parents(p)
	o := collect(opts)
	attrs := uint32(0x10)
	if o.attrs != nil {
		attrs = *o.attrs
	}
	h := basicHeader(p, tar.TypeDir, 0, attrs, o)
	h.Mode = modeDir
	l.dirs[strings.ToUpper(p)] = true
	l.items = append(l.items, item{hdr: h})
	return l
}

// File adds a regular file.
func (l *Layer) File(p string, content []byte, opts ...EntryOption) *Layer {
	l.parents(p)
	o := collect(opts)
	attrs := uint32(0x20)
	if o.attrs != nil {
		attrs = *o.attrs
	}
	h := basicHeader(p, tar.TypeReg, int64(len(content)), attrs, o)
	h.Mode = modeRegular
	l.items = append(l.items, item{hdr: h, data: content})
	return l
}

// Stream adds the alternate data stream "path:stream:$DATA", which the
// exporter writes right after its file, without MSWINDOWS records.
func (l *Layer) Stream(p, stream string, content []byte) *Layer {
	h := &tar.Header{
		Format:     tar.FormatPAX,
		Name:       p + ":" + stream + ":$DATA",
		Typeflag:   tar.TypeReg,
		Mode:       modeRegular,
		Size:       int64(len(content)),
		ModTime:    DefaultTime,
		AccessTime: DefaultTime,
		ChangeTime: DefaultTime,
	}
	l.items = append(l.items, item{hdr: h, data: content})
	return l
}

// Symlink adds a symlink (or, WithMountPoint, a junction) to target, a
// Windows path such as `C:\ProgramData` or `..\x`.
func (l *Layer) Symlink(p, target string, opts ...EntryOption) *Layer {
	l.parents(p)
	o := collect(opts)
	attrs := uint32(0x420)
	if o.mountPoint {
		attrs = 0x410 // junctions are directories
	}
	if o.attrs != nil {
		attrs = *o.attrs
	}
	h := basicHeader(p, tar.TypeSymlink, 0, attrs, o)
	h.Mode = modeSymlink
	h.Linkname = target
	if o.mountPoint {
		h.PAXRecords["MSWINDOWS.mountpoint"] = "1"
	}
	l.items = append(l.items, item{hdr: h})
	return l
}

// HardLink adds a second name for target, as the exporter writes it: a
// TypeLink entry with mode 0644 and the target's basic-info records.
func (l *Layer) HardLink(p, target string) *Layer {
	l.parents(p)
	o := collect([]EntryOption{WithSD(nil)})
	h := basicHeader(p, tar.TypeLink, 0, 0x20, o)
	h.Mode = 0o644
	h.Linkname = target
	l.items = append(l.items, item{hdr: h})
	return l
}

// Whiteout deletes path (and its subtree) of the parent layers: a bare
// entry "dir/.wh.name" with no records, as hcsshim's exporter writes it.
func (l *Layer) Whiteout(p string) *Layer {
	l.parents(p)
	dir, name := path.Split(p)
	h := &tar.Header{Name: dir + ".wh." + name, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
	l.items = append(l.items, item{hdr: h})
	return l
}

// Raw appends a header exactly as given (for malformed-input tests).
func (l *Layer) Raw(hdr *tar.Header, data []byte) *Layer {
	l.items = append(l.items, item{hdr: hdr, data: data})
	return l
}

// Paths lists the entries' tar names in order.
func (l *Layer) Paths() []string {
	out := make([]string, len(l.items))
	for i, it := range l.items {
		out[i] = it.hdr.Name
	}
	return out
}

// Bytes returns the layer blob. It panics if the layer cannot be written,
// which only a malformed Raw header causes (use WriteTo to see the error).
func (l *Layer) Bytes(c Compression) []byte {
	var b bytes.Buffer
	if err := l.WriteTo(&b, c); err != nil {
		panic("wclayertest: " + err.Error())
	}
	return b.Bytes()
}

// WriteTo writes the layer blob to w.
func (l *Layer) WriteTo(w io.Writer, c Compression) error {
	return Compress(w, c, func(tw io.Writer) error {
		t := tar.NewWriter(tw)
		for _, it := range l.items {
			if err := t.WriteHeader(it.hdr); err != nil {
				return fmt.Errorf("entry %q: %w", it.hdr.Name, err)
			}
			if _, err := t.Write(it.data); err != nil {
				return fmt.Errorf("entry %q: %w", it.hdr.Name, err)
			}
		}
		return t.Close()
	})
}

// Compress runs write with a writer that compresses into w.
func Compress(w io.Writer, c Compression, write func(io.Writer) error) error {
	switch c {
	case Uncompressed:
		return write(w)
	case Gzip:
		gz := gzip.NewWriter(w)
		if err := write(gz); err != nil {
			return err
		}
		return gz.Close()
	case Zstd:
		zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return err
		}
		if err := write(zw); err != nil {
			zw.Close()
			return err
		}
		return zw.Close()
	}
	return fmt.Errorf("wclayertest: unknown compression %d", c)
}
