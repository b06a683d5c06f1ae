package main

import (
	"io"
	"os"
)

// fileOpeners turns file paths into the openers wclayer.MergeView takes.
func fileOpeners(paths []string) []func() (io.ReadCloser, error) {
	out := make([]func() (io.ReadCloser, error), len(paths))
	for i, p := range paths {
		out[i] = func() (io.ReadCloser, error) { return os.Open(p) }
	}
	return out
}
