// Package trusttest holds test helpers for signing and verification: key
// files generated on the fly and synthetic cimconv artifacts (correct
// binding, placeholder CIM blobs) pushed to a test registry. Nothing here is
// used outside tests.
package trusttest
