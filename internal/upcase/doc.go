// Package upcase is the project's one definition of "the same name": the
// upcase table the CIM writer (internal/cim) stores in every image, through
// which a CIM's names are compared and its link tables sorted, and Fold, the
// case-insensitive key built on that table. Everything else that decides
// whether two names are one entry uses Fold too: the layers' merged view
// (wclayer), the comparison of two views (fsview, `converter cim verify`) and
// the portable builder. Two names that fold alike are one entry in a CIM
// this project writes, and two that do not are two entries, so every side
// agrees on how many entries a directory has.
//
// Windows' own table (NTFS $UpCase, RtlUpcaseUnicodeChar) is not published;
// how this one is built, and where it departs from Unicode's simple
// upper-case mapping, is in Table's comment and docs/cim-format.md. It has
// not been compared with a table CimFS.dll writes or uses.
//
// It is a leaf package: it imports no other cimconv package.
package upcase
