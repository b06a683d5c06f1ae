// Package wclayertest generates Windows container layer tars for tests,
// shaped as Windows' exporter (hcsshim's ociwclayer export over go-winio's
// backuptar) writes them: PAX format; MSWINDOWS.fileattr, MSWINDOWS.rawsd,
// MSWINDOWS.xattr.*, MSWINDOWS.mountpoint and LIBARCHIVE.creationtime
// records; mode bits 040000/0100000/0120000 without permissions; parent
// directories listed before their contents; alternate streams as separate
// entries after their file; hard links as TypeLink entries carrying their
// own basic-info records; bare whiteouts.
//
// One deliberate difference from go-winio: alternate streams are named
// "file:stream:$DATA", the form hcsshim's CIM importer requires (go-winio's
// backuptar writes "file:stream", which that importer refuses).
//
// Everything is deterministic: fixed times and seeded pseudo-random data.
// It is test support only; production code must not import it.
package wclayertest
