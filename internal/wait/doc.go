// Package wait waits for a while unless a context is done first: the one
// sleep that retry loops (registry requests, queue pulls and result polls)
// share.
//
// It imports no other cimconv package.
package wait
