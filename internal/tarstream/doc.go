// Package tarstream reads a tar stream with the cost of a Windows layer's
// many small entries in mind: for the headers Go's archive/tar writer emits
// (USTAR blocks, PAX 'x' records, regular files, directories, symlinks and
// hard links) it parses each block in place, reuses one Header and one
// PAXRecords map, and does not scan or allocate what layers never use.
//
// Anything else (GNU or V7 blocks, GNU long names, sparse files, PAX global
// headers, base-256 numbers, special files, a header it would reject) hands
// the stream, from the first block of that entry, to archive/tar for the rest
// of the archive, so every input gets archive/tar's exact answer: the same
// headers, data and errors (tar.ErrHeader, io.ErrUnexpectedEOF, the source's
// own errors). A differential fuzz target holds the two readers to that.
//
// Of consecutive PAX 'x' headers before an entry, archive/tar applies only
// the latest (each replaces the records of those before it); tarstream keeps
// only the latest too, for itself and for a hand-over, which starts there. A
// tar with any number of them costs one header's memory (at most 1 MiB).
//
// It imports no other cimconv package.
package tarstream
