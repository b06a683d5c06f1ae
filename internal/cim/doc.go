// Package cim reads and writes the CimFS "composite image" on-disk format in
// pure Go: the .cim filesystem file, its region_* and objectid_* files, and
// forked CIMs that reference their parents' region sets.
//
// Writer (Create, CreateForked) mirrors CimFS's own calls: AddFile + Write,
// AddAlternateStream, AddLink, Unlink, Commit; file data streams straight to
// the region files, metadata stays in memory until Commit. Stager writes an
// image's file data before its parent exists (region indexes depend only on
// the chain depth); a Writer adopts it with WithStaged and AddFileStaged, with
// byte-identical output. Image (Open) reads any 2.x/3.x classic CIM,
// validating every offset, and View returns the tree as fsview entries. The layout and every choice made where public
// information stops are in docs/cim-format.md; the output has not been
// validated against Windows' CimFS.dll.
//
// It owns the byte format only. It knows nothing of layer tars (see wclayer)
// or of how a chain of layers becomes a chain of CIMs (see builder/portable).
package cim
