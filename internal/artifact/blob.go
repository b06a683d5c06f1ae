package artifact

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// Blob layout: a tar, zstd-compressed, holding one layer's CIM files under
// "cim/" and its side files (Hives/*_BASE, layout) under "side/". Entries are
// written in the order given (callers pass sorted lists), with zeroed times
// and owners, so the same files give the same bytes.
const (
	blobCimPrefix  = "cim/"
	blobSidePrefix = "side/"
)

// BlobInfo is what Pack wrote.
type BlobInfo struct {
	Digest string // "sha256:<hex>" of the compressed blob
	Size   int64
	// Uncompressed is the size of the tar before compression.
	Uncompressed int64
}

// Pack writes the blob for one layer to w: cimFiles are names inside cimDir,
// sideFiles slash-separated paths inside sideDir.
func Pack(w io.Writer, cimDir string, cimFiles []string, sideDir string, sideFiles []string) (BlobInfo, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	// Concurrency 1 and a fixed level keep the output byte-identical.
	zw, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return BlobInfo{}, err
	}
	tc := &countWriter{w: zw}
	tw := tar.NewWriter(tc)
	add := func(dir, rel, name string) error {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Size:     st.Size(),
			Mode:     0o644,
			ModTime:  time.Unix(0, 0),
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	}
	for _, f := range cimFiles {
		if !safeName(f) {
			return BlobInfo{}, fmt.Errorf("pack: bad CIM file name %q", f)
		}
		if err := add(cimDir, f, blobCimPrefix+f); err != nil {
			return BlobInfo{}, fmt.Errorf("pack %s: %w", f, err)
		}
	}
	for _, f := range sideFiles {
		if err := SafeRelPath(f); err != nil {
			return BlobInfo{}, fmt.Errorf("pack: %w", err)
		}
		if err := add(sideDir, f, blobSidePrefix+f); err != nil {
			return BlobInfo{}, fmt.Errorf("pack %s: %w", f, err)
		}
	}
	if err := tw.Close(); err != nil {
		return BlobInfo{}, err
	}
	if err := zw.Close(); err != nil {
		return BlobInfo{}, err
	}
	return BlobInfo{Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: cw.n, Uncompressed: tc.n}, nil
}

// Unpacked lists what Unpack wrote.
type Unpacked struct {
	CimFiles  []string
	SideFiles []string
}

// ErrBlob marks a malformed or unexpected blob.
var ErrBlob = errdefs.New(errdefs.ErrInvalidArgument, "malformed CIM layer blob")

// Unpack extracts a blob: "cim/" entries into cimDir, "side/" entries into
// sideDir. Only regular files with safe names are accepted; anything else
// (links, traversal, unknown prefixes, duplicate names) is an error. want, when
// non-nil, lists exactly the files the config promised.
func Unpack(r io.Reader, cimDir, sideDir string, want *LayerConfig) (Unpacked, error) {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return Unpacked{}, fmt.Errorf("%w: %v", ErrBlob, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out Unpacked
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%w: %v", ErrBlob, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return out, fmt.Errorf("%w: entry %q is not a regular file", ErrBlob, hdr.Name)
		}
		if seen[hdr.Name] {
			return out, fmt.Errorf("%w: entry %q twice", ErrBlob, hdr.Name)
		}
		seen[hdr.Name] = true
		var dst string
		switch {
		case len(hdr.Name) > len(blobCimPrefix) && hdr.Name[:len(blobCimPrefix)] == blobCimPrefix:
			name := hdr.Name[len(blobCimPrefix):]
			if !safeName(name) {
				return out, fmt.Errorf("%w: unsafe CIM file name %q", ErrBlob, hdr.Name)
			}
			dst = filepath.Join(cimDir, name)
			out.CimFiles = append(out.CimFiles, name)
		case len(hdr.Name) > len(blobSidePrefix) && hdr.Name[:len(blobSidePrefix)] == blobSidePrefix:
			rel := hdr.Name[len(blobSidePrefix):]
			if err := SafeRelPath(rel); err != nil {
				return out, fmt.Errorf("%w: %v", ErrBlob, err)
			}
			dst = filepath.Join(sideDir, filepath.FromSlash(rel))
			out.SideFiles = append(out.SideFiles, rel)
		default:
			return out, fmt.Errorf("%w: unexpected entry %q", ErrBlob, hdr.Name)
		}
		if err := writeFile(dst, tr, hdr.Size); err != nil {
			return out, err
		}
	}
	if want != nil {
		if !sameSet(out.CimFiles, want.CimFiles) {
			return out, fmt.Errorf("%w: CIM files %v, config lists %v", ErrBlob, out.CimFiles, want.CimFiles)
		}
		if !sameSet(out.SideFiles, want.SideFiles) {
			return out, fmt.Errorf("%w: side files %v, config lists %v", ErrBlob, out.SideFiles, want.SideFiles)
		}
	}
	return out, nil
}

func writeFile(dst string, r io.Reader, size int64) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".partial"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("%w: %s: short entry", ErrBlob, path.Base(dst))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]int, len(a))
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		if m[s] == 0 {
			return false
		}
		m[s]--
	}
	return true
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
