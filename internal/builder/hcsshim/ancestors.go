package hcsshim

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cimconv/cimconv/internal/builder"
)

// checkAncestorFiles checks that the CIM files of ancestor p (depth 1 is the
// immediate parent) are in dir, the directory the child is built in. A forked
// CIM names its parents' region sets, which CimFS looks for in the child's own
// directory, so every ancestor's .cim, region_* and objectid_* files must be
// there — not only the immediate parent's: a chain unpacked from the cache
// without a grandparent's region files would give a child that cannot mount.
// A block CIM's parents are checked the same way (they are mounted together).
func checkAncestorFiles(p *builder.BuiltLayer, depth int, dir string) error {
	names := p.CimFiles
	if !slices.Contains(names, p.CimName) {
		names = append([]string{p.CimName}, names...)
	}
	if p.Format != builder.FormatBlock && !hasPrefix(names, "region_") {
		return fmt.Errorf("%s %s lists no region files (CimFiles %v): cannot check that its CIM is complete in %s", ancestorLabel(depth), p.ChainID, p.CimFiles, dir)
	}
	for _, n := range names {
		if n == "" || n != filepath.Base(n) || strings.ContainsAny(n, `/\`) {
			return fmt.Errorf("%s %s: CIM file name %q is not a plain name", ancestorLabel(depth), p.ChainID, n)
		}
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("%s %s: CIM file %s is missing from the build directory %s: a child CIM needs every ancestor's files beside it: %w", ancestorLabel(depth), p.ChainID, n, dir, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s %s: %s in %s is not a regular file", ancestorLabel(depth), p.ChainID, n, dir)
		}
	}
	return nil
}

func ancestorLabel(depth int) string {
	if depth == 1 {
		return "parent"
	}
	return fmt.Sprintf("ancestor (%d generations up)", depth)
}

func hasPrefix(names []string, prefix string) bool {
	for _, x := range names {
		if strings.HasPrefix(x, prefix) {
			return true
		}
	}
	return false
}
