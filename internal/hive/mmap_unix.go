//go:build unix

package hive

import (
	"fmt"
	"os"
	"syscall"
)

// MapFile maps the file at path read-only into memory (outside the Go
// heap, so a 100 MiB base hive does not double the garbage collector's
// target) and returns its bytes and a function that unmaps them. The file
// must not be truncated while mapped. Empty files are read normally.
func MapFile(path string) ([]byte, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := fi.Size()
	if size == 0 || size != int64(int(size)) {
		b, err := os.ReadFile(path)
		return b, func() error { return nil }, err
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", path, err)
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}
