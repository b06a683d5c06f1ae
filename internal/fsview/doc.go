// Package fsview is the neutral description of a filesystem tree that both
// sides of a comparison produce: the merged view of a chain of layer tars
// (wclayer) and the view stored in a CIM (cim), or a mounted CIM on Windows.
// It is also the line format of `converter cim ls --json`.
//
// Paths match case-insensitively through internal/upcase, the upcase table
// the CIM writer stores in its images; it is the only cimconv package this
// one imports.
package fsview
