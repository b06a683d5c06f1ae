// Package wclayer reads Windows container layer tars (the OCI layers of
// Windows images): it detects and verifies the compression, decodes the
// MSWINDOWS.* and LIBARCHIVE.* PAX records, validates every path and record,
// and yields typed entries (files, directories, symlinks, hard links,
// alternate data streams, whiteouts) in one streaming pass. MergeView
// applies a chain of layers to give the view a CIM must show.
//
// It knows nothing of CIMs, registries or queues.
//
// Choices where the sources disagree or say nothing (none of them was
// observed on Windows; they follow hcsshim's importer where it is explicit):
//
//   - Alternate streams must be named "file:stream:$DATA", as hcsshim's CIM
//     importer requires; go-winio's backuptar writes "file:stream", which
//     that importer also refuses, so it is refused here (ErrInvalidName).
//   - Backslashes in names are separators (the importer applies
//     filepath.FromSlash, so `Files\..\..\x` would escape on Windows).
//   - Only Files/, Hives/ and UtilityVM/ may appear at the top (compared
//     case-insensitively). A top-level `layout` file is refused: the
//     importer writes it for base layers, it never comes from a tar.
//   - Opaque whiteouts (.wh..wh..opq) and other .wh..wh. names: ErrUnsupported.
//   - NTFS's length limits apply to the names an entry stands for, not to its
//     tar name: 255 UTF-16 units for each directory name, for the file name
//     (a whiteout's without ".wh.", a stream's without ":stream:$DATA") and
//     for the stream name; 32767 for the path (a stream's with its suffix).
//   - MSWINDOWS.sd (SDDL text, pre-2017 exports) cannot be turned into a
//     binary descriptor off Windows: ErrUnsupported.
//   - After the tar's end marker only zero bytes may follow (ErrCorrupt
//     otherwise); they are hashed into the DiffID.
//   - Names compare case-insensitively through the upcase table the CIM
//     writer stores in its images (internal/upcase): BMP characters upcased
//     by Unicode's simple mapping except that U+0131, U+017F, U+00B5 and
//     U+0345 stay themselves, characters outside the BMP as they are. So
//     "I.txt" and "ı.txt" are two entries here as in the CIM, and a top-level
//     "Fileſ" is not Files/ (ErrArea). An approximation of NTFS's table.
//   - Errors about the layer's content are *Error (permanent); a failure of
//     the source reader is returned wrapped as is, so callers may retry it.
package wclayer
