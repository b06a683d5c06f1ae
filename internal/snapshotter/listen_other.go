//go:build !windows

package snapshotter

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Listen opens the snapshotter's address: a unix socket path (a stale socket
// file is replaced).
func Listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(address); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(address)
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", address, err)
	}
	return l, nil
}
