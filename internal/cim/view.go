package cim

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf16"

	"github.com/cimconv/cimconv/internal/fsview"
)

// View returns the whole tree as fsview entries sorted by path: type
// (reparse points by tag: "symlink", "junction", or "reparse" with
// reparseTag), size, attributes (including the derived
// 0x10 and 0x400), sha256 of each file's default stream, SD/EA/reparse data
// in base64, alternate streams and the last write time.
func (im *Image) View() ([]fsview.Entry, error) {
	var out []fsview.Entry
	hashes := map[uint32]string{} // hard links are hashed once
	rootRec, err := im.record(im.root)
	if err != nil {
		return nil, fmt.Errorf("view %s: %w", im.path, err)
	}
	err = im.walk("", rootRec, 0, map[uint32]bool{im.root: true}, func(p string, st *Stat, rec *fileRecord) error {
		e := fsview.Entry{Path: p, Attributes: st.Attributes, LastWriteTime: st.LastWriteTime}
		switch {
		case st.ReparseData != nil:
			// Typed by the file record's tag (what CimFS reports), which a
			// correct writer keeps equal to the buffer's (fsck checks).
			e.Type, e.ReparseTag = fsview.ReparseType(st.ReparseTag)
		case st.IsDir:
			e.Type = fsview.TypeDir
		default:
			e.Type = fsview.TypeFile
		}
		if !st.IsDir {
			e.Size = st.Size
		}
		if e.Type == fsview.TypeFile {
			if h, ok := hashes[st.FileID]; ok {
				e.SHA256 = h
			} else {
				r, err := im.streamReader(rec.DefaultStream)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				if e.SHA256, err = hashReader(r); err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				hashes[st.FileID] = e.SHA256
			}
		}
		e.SD = b64(st.SecurityDescriptor)
		e.EA = b64(st.ExtendedAttributes)
		e.Reparse = b64(st.ReparseData)
		streams, err := im.streamEntries(rec)
		if err == nil {
			err = im.checkOrder("stream table", streams)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, se := range streams {
			name := string(utf16.Decode(se.name))
			s := parseStream(se.entry)
			if s.typ() != streamTypeData {
				return formatErr("%s:%s: stream type %d", p, name, s.typ())
			}
			r, err := im.streamReader(s)
			if err != nil {
				return fmt.Errorf("%s:%s: %w", p, name, err)
			}
			h, err := hashReader(r)
			if err != nil {
				return fmt.Errorf("%s:%s: %w", p, name, err)
			}
			e.Streams = append(e.Streams, fsview.Stream{Name: name, Size: s.size(), SHA256: h})
		}
		sort.Slice(e.Streams, func(i, j int) bool { return e.Streams[i].Name < e.Streams[j].Name })
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("view %s: %w", im.path, err)
	}
	fsview.Sort(out)
	return out, nil
}

func hashReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func b64(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

// RegionSetInfo describes one region set named by a .cim header.
type RegionSetInfo struct {
	ID    string `json:"id"`
	Count int    `json:"count"`
}

// RegionFileInfo describes one region or objectid file.
type RegionFileInfo struct {
	Name  string `json:"name"`
	Index int    `json:"index"` // global region index (parents first)
	Type  string `json:"type"`  // metadata, data, smalldata
	Size  int64  `json:"size"`
	Own   bool   `json:"own"` // belongs to this image, not a parent
}

// Info is what `converter cim inspect` prints.
type Info struct {
	Path                string           `json:"path"`
	Version             string           `json:"version"`
	RegionSet           RegionSetInfo    `json:"regionSet"`
	Parents             []RegionSetInfo  `json:"parents,omitempty"`
	Regions             []RegionFileInfo `json:"regions"`
	ObjectIDFiles       []RegionFileInfo `json:"objectIdFiles"`
	FileEntrySize       int              `json:"fileEntrySize"`
	FileTables          int              `json:"fileTables"`
	Files               int              `json:"files"`       // distinct non-directory FileIDs
	Directories         int              `json:"directories"` // not counting the root
	HardLinks           int              `json:"hardLinks"`   // directory entries beyond the first per FileID
	ReparsePoints       int              `json:"reparsePoints"`
	Streams             int              `json:"alternateStreams"`
	SparseStreams       int              `json:"sparseStreams"`
	SecurityDescriptors int              `json:"securityDescriptors"` // distinct
	DataBytes           int64            `json:"dataBytes"`           // sum of default stream sizes of distinct files
}

var regionTypeNames = map[uint8]string{RegionMetadata: "metadata", RegionData: "data", RegionSmallData: "smalldata"}

func regionTypeName(t uint8) string {
	if n, ok := regionTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", t)
}

// Inspect opens the CIM at path and summarizes its headers, region files and
// contents.
func Inspect(path string) (*Info, error) {
	im, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	info := &Info{
		Path:       path,
		Version:    im.hdr.Common.Version.String(),
		RegionSet:  RegionSetInfo{ID: im.hdr.Regions.ID.String(), Count: int(im.hdr.Regions.Count)},
		FileTables: len(im.ftdir),
	}
	if len(im.ftdir) > 0 {
		info.FileEntrySize = int(im.ftdir[0].EntrySize)
	}
	for _, p := range im.hdr.Parents {
		info.Parents = append(info.Parents, RegionSetInfo{ID: p.ID.String(), Count: int(p.Count)})
	}
	own := len(im.regions) - int(im.hdr.Regions.Count)
	dir := filepath.Dir(path)
	for i, r := range im.regions {
		info.Regions = append(info.Regions, RegionFileInfo{Name: r.name, Index: i, Type: regionTypeName(r.typ), Size: int64(r.size), Own: i >= own})
		oname := "objectid" + strings.TrimPrefix(r.name, "region")
		if fi, err := os.Stat(filepath.Join(dir, oname)); err == nil {
			info.ObjectIDFiles = append(info.ObjectIDFiles, RegionFileInfo{Name: oname, Index: i, Type: regionTypeName(r.typ), Size: fi.Size(), Own: i >= own})
		}
	}
	seen := map[uint32]bool{}
	sds := map[string]bool{}
	rootRec, err := im.record(im.root)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	err = im.walk("", rootRec, 0, map[uint32]bool{im.root: true}, func(p string, st *Stat, rec *fileRecord) error {
		if seen[st.FileID] {
			info.HardLinks++
			return nil
		}
		seen[st.FileID] = true
		if st.IsDir {
			info.Directories++
		} else {
			info.Files++
			info.DataBytes += st.Size
			if st.Sparse {
				info.SparseStreams++
			}
		}
		if st.ReparseData != nil {
			info.ReparsePoints++
		}
		sds[string(st.SecurityDescriptor)] = true
		ss, err := im.streamEntries(rec)
		info.Streams += len(ss)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	info.SecurityDescriptors = len(sds)
	return info, nil
}
