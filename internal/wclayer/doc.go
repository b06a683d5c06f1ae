// Package wclayer reads Windows container layer tars (the OCI layers of
// Windows images): it detects and verifies the compression, decodes the
// MSWINDOWS.* and LIBARCHIVE.* PAX records, validates every path and record,
// and yields typed entries (files, directories, symlinks, hard links,
// alternate data streams, whiteouts) in one streaming pass.
//
// It knows nothing of CIMs, registries or queues.
package wclayer
