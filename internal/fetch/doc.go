// Package fetch is the node side: it finds the cimconv artifact of an image
// through the referrers API (or the fallback tag), picks the newest one
// compatible with the node's Windows build, verifies every digest, and lays
// the CIM chain out on disk the way containerd's cimfs snapshotter expects it:
//
//	DEST/cim-layers/<name>.cim, region_*, objectid_*   every layer's CIM files
//	DEST/layers/<chainID hex>/Hives/*_BASE, layout     per-layer side files
//
// It must not build or push anything.
package fetch
