//go:build !unix

package hive

import "os"

// MapFile reads the file at path (no mapping on this platform) and returns
// its bytes and a no-op release function.
func MapFile(path string) ([]byte, func() error, error) {
	b, err := os.ReadFile(path)
	return b, func() error { return nil }, err
}
