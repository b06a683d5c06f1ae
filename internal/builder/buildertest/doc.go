// Package buildertest holds what the builders' tests share: a layer reader
// that cancels its build mid-stream.
//
// It is for tests only; cmd/converter's TestNoTestPackagesLinked keeps it
// out of the converter binary.
package buildertest
