//go:build !linux

package cim

func peakRSSMiB() (float64, bool) { return 0, false }
