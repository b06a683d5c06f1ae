// Command hashfile prints the SHA-256 of a file with Go's crypto/sha256 (SHA
// extensions where the CPU has them), read in 1 MiB blocks: the hash floor
// bench/cim-build.sh compares `converter cim build` with, since a verifying
// build must hash every byte of the layer for its diffID.
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: hashfile FILE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	fmt.Printf("sha256:%x  %s\n", h.Sum(nil), os.Args[1])
}
