// Package wclayertest is the former name of package fixture, kept as
// aliases so that tests written against it keep compiling while parallel
// branches land. New code imports internal/wclayer/fixture; new fixtures go
// there (this package need not alias them).
package wclayertest
