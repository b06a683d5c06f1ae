package cim

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Rename sets the CIM's name and region-set ID before Commit. A builder that
// learns its layer's chainID only after streaming the layer (the diffID is
// the hash of the whole tar) derives the deterministic ID then: files are
// written under temporary names, so nothing on disk has to move until Commit.
func (w *Writer) Rename(name string, id GUID) error {
	if err := w.begin(); err != nil {
		return err
	}
	if name == "" || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("rename CIM %s: invalid name %q", w.name, name)
	}
	for _, p := range w.parents {
		if p.ID == id {
			return fmt.Errorf("rename CIM %s: region set ID %s already used by a parent", w.name, id)
		}
	}
	if name != w.name {
		if _, err := os.Lstat(filepath.Join(w.dir, name+".cim")); err == nil {
			return fmt.Errorf("rename CIM %s: %s.cim: %w", w.name, name, fs.ErrExist)
		}
	}
	oldRegion, oldObj := "region_"+w.id.String()+"_", "objectid_"+w.id.String()+"_"
	newRegion, newObj := "region_"+id.String()+"_", "objectid_"+id.String()+"_"
	for i, f := range w.final {
		switch {
		case strings.HasPrefix(f, oldRegion):
			w.final[i] = newRegion + strings.TrimPrefix(f, oldRegion)
		case strings.HasPrefix(f, oldObj):
			w.final[i] = newObj + strings.TrimPrefix(f, oldObj)
		}
	}
	w.name, w.id = name, id
	return nil
}
