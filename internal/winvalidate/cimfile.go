package winvalidate

import (
	"fmt"
	"io"
	"os"
)

// IsBlockCIM tells a forked CIM, whose .cim file starts with the magic
// "cimfile0", from a single-file block CIM (anything else).
func IsBlockCIM(cimPath string) (bool, error) {
	f, err := os.Open(cimPath)
	if err != nil {
		return false, fmt.Errorf("open CIM: %w", err)
	}
	defer f.Close()
	var magic [8]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return false, fmt.Errorf("read CIM %s: %w", cimPath, err)
	}
	return string(magic[:]) != "cimfile0", nil
}
