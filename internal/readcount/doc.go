// Package readcount counts the bytes read through a stream and reports them
// as they pass: for progress lines (`converter cim build`) and for byte
// metrics and events (a conversion's fetched layers).
//
// It imports no other cimconv package.
package readcount
