//go:build linux

package cim

import "syscall"

// peakRSSMiB is the process's peak resident set size (Linux reports KiB).
func peakRSSMiB() (float64, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return float64(ru.Maxrss) / 1024, true
}
