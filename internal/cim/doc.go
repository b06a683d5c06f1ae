// Package cim reads and writes the CimFS "composite image" on-disk format in
// pure Go: the .cim filesystem file, its region_* and objectid_* files, and
// forked CIMs that reference their parents' region sets.
//
// It owns the byte format only. It knows nothing of layer tars (see wclayer)
// or of how a chain of layers becomes a chain of CIMs (see builder/portable).
package cim
