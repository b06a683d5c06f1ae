package hcsshim

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cimconv/cimconv/internal/builder"
)

// baseHives are the files under Hives/ that a child layer's delta hives are
// merged into (names as hcsshim's internal/wclayer/cim writes them).
var baseHives = []string{"SYSTEM_BASE", "SOFTWARE_BASE", "SAM_BASE", "SECURITY_BASE", "DEFAULTUSER_BASE"}

// listNames returns the names of the entries directly inside dir (none when
// dir does not exist yet).
func listNames(dir string) (map[string]bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	m := make(map[string]bool, len(ents))
	for _, e := range ents {
		m[e.Name()] = true
	}
	return m, nil
}

// createdCimFiles returns, sorted, the names in after but not in before that
// belong to an import of cimName (or block file blockName): the .cim itself
// and the region_* and objectid_* files CimFS created beside it (their GUID
// is chosen by CimFS, hence the listing diff).
func createdCimFiles(before, after map[string]bool, cimName, blockName string) []string {
	var out []string
	for n := range after {
		if before[n] {
			continue
		}
		if n == cimName || (blockName != "" && n == blockName) || strings.HasPrefix(n, "region_") || strings.HasPrefix(n, "objectid_") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// sideFiles lists the files of sideDir that children and nodes need:
// Hives/*_BASE and layout, slash-separated and sorted.
func sideFiles(sideDir string) ([]string, error) {
	var out []string
	if _, err := os.Stat(filepath.Join(sideDir, "layout")); err == nil {
		out = append(out, "layout")
	}
	for _, h := range baseHives {
		if _, err := os.Stat(filepath.Join(sideDir, "Hives", h)); err == nil {
			out = append(out, "Hives/"+h)
		}
	}
	sort.Strings(out)
	return out, nil
}

// carryForwardHives gives sideDir every Hives/*_BASE its parent has and this
// layer did not produce. hcsshim merges a delta hive only with the immediate
// parent's base hive, and writes a base hive only for hives the layer has a
// delta for; without this a grandchild's merge would not find its base.
func carryForwardHives(parentSideDir, sideDir string) ([]string, error) {
	var carried []string
	for _, h := range baseHives {
		dst := filepath.Join(sideDir, "Hives", h)
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		src := filepath.Join(parentSideDir, "Hives", h)
		if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return carried, fmt.Errorf("parent base hive: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return carried, fmt.Errorf("carry base hive %s forward: %w", h, err)
		}
		if err := builder.LinkOrCopy(src, dst); err != nil {
			return carried, fmt.Errorf("carry base hive %s forward: %w", h, err)
		}
		carried = append(carried, h)
	}
	return carried, nil
}

// RemoveLayer deletes the files of one built layer: its CIM files in CimDir
// and its side directory. Children forked from it become unusable, so remove
// a chain top-down. It is meant for work directories after the artifact is
// pushed, and for callers cleaning up a failed chain.
func RemoveLayer(l *builder.BuiltLayer) error {
	if l == nil {
		return nil
	}
	var errs []error
	for _, f := range l.CimFiles {
		if f == "" || f != filepath.Base(f) {
			errs = append(errs, fmt.Errorf("remove layer %s: CIM file name %q is not a plain name", l.ChainID, f))
			continue
		}
		if err := os.Remove(filepath.Join(l.CimDir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove layer %s: %w", l.ChainID, err))
		}
	}
	if l.SideDir != "" {
		if err := os.RemoveAll(l.SideDir); err != nil {
			errs = append(errs, fmt.Errorf("remove layer %s side directory: %w", l.ChainID, err))
		}
	}
	return errors.Join(errs...)
}

// digestHex returns the hex of a "sha256:<64 hex>" digest; what is used in
// file names must be exactly that.
func digestHex(field, d string) (string, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return "", fmt.Errorf("%s %q: want sha256:<64 hex digits>", field, d)
	}
	if _, err := hex.DecodeString(h); err != nil || strings.ToLower(h) != h {
		return "", fmt.Errorf("%s %q: want sha256:<64 lower-case hex digits>", field, d)
	}
	return h, nil
}

// uniqueSuffix keeps two builds of the same layer or chain apart on disk.
func uniqueSuffix() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random name suffix: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// cimVersion reads the format version from a CIM filesystem file header:
//
//	offset 0  [8]byte magic "cimfile0"
//	offset 8  uint32  header length
//	offset 12 uint8   file type, uint8 reserved, uint16 reserved
//	offset 16 uint32  version major (little-endian)
//	offset 20 uint32  version minor
func cimVersion(r io.Reader) (string, error) {
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", fmt.Errorf("CIM header: %w", err)
	}
	if string(hdr[:8]) != "cimfile0" {
		return "", fmt.Errorf("CIM header: magic %q is not \"cimfile0\"", hdr[:8])
	}
	major := binary.LittleEndian.Uint32(hdr[16:])
	minor := binary.LittleEndian.Uint32(hdr[20:])
	return fmt.Sprintf("%d.%d", major, minor), nil
}
