//go:build windows

package snapshotter

import (
	"fmt"
	"net"

	"github.com/Microsoft/go-winio"
)

// Listen opens the snapshotter's address: a named pipe
// (\\.\pipe\cimconv-snapshotter), reachable by Administrators and SYSTEM
// only, as containerd's own pipe is.
func Listen(address string) (net.Listener, error) {
	l, err := winio.ListenPipe(address, &winio.PipeConfig{SecurityDescriptor: "D:P(A;;GA;;;BA)(A;;GA;;;SY)"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", address, err)
	}
	return l, nil
}
