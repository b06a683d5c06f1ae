// Package keymutex serialises work per key (a subject, a directory, a
// chainID) when the keys are unbounded: a key's mutex exists only while
// someone holds or waits for it.
//
// It imports no other cimconv package.
package keymutex
