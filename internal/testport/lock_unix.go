//go:build unix

package testport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

func reserve() (int, func(), error) {
	hi := upper()
	if hi-low < 100 {
		return ephemeral()
	}
	return reserveIn(low, hi)
}

// reserveIn locks the first free port of [lo, hi) from a random start and
// returns it with the function that releases it.
func reserveIn(lo, hi int) (int, func(), error) {
	dir := filepath.Join(os.TempDir(), "cimconv-testports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, nil, fmt.Errorf("lock directory: %w", err)
	}
	n := hi - lo
	start := rand.IntN(n)
	for i := range n {
		port := lo + (start+i)%n
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, nil, fmt.Errorf("lock file for port %d: %w", port, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // another test holds it
			}
			return 0, nil, fmt.Errorf("lock port %d: %w", port, err)
		}
		if !bindable(port) { // something outside these tests has it
			f.Close()
			continue
		}
		return port, func() { f.Close() }, nil
	}
	return 0, nil, fmt.Errorf("no free port in %d-%d", lo, hi-1)
}
