// Package fsview is the neutral description of a filesystem tree that both
// sides of a comparison produce: the merged view of a chain of layer tars
// (wclayer) and the view stored in a CIM (cim), or a mounted CIM on Windows.
// It is also the line format of `converter cim ls --json`.
//
// It is a leaf package: it imports no other cimconv package.
package fsview
