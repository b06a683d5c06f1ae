// Command genlayer writes a large deterministic Windows layer tar (see
// fixture.Large) for benchmark scripts, or the sample chain
// (fixture.WriteSampleChain) with -sample.
//
//	go run ./bench/genlayer -files 20000 -mb 512 -compress gzip -out /tmp/layer.tar.gz
//	go run ./bench/genlayer -sample -compress gzip -out /tmp/chain
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func main() {
	files := flag.Int("files", 20000, "number of files")
	mb := flag.Int64("mb", 512, "total file data in MiB")
	seed := flag.Int64("seed", 1, "seed of the deterministic content")
	comp := flag.String("compress", "none", "none, gzip or zstd")
	out := flag.String("out", "", "output file (a directory with -sample); required")
	sample := flag.Bool("sample", false, "write the 3-layer sample chain into the -out directory instead")
	flag.Parse()
	if err := run(*out, *comp, *sample, *files, *mb, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "genlayer:", err)
		os.Exit(1)
	}
}

func run(out, comp string, sample bool, files int, mb, seed int64) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	c, ok := map[string]fixture.Compression{"none": fixture.Uncompressed, "gzip": fixture.Gzip, "zstd": fixture.Zstd}[comp]
	if !ok {
		return fmt.Errorf("-compress %q: want none, gzip or zstd", comp)
	}
	if sample {
		paths, err := fixture.WriteSampleChain(out, c)
		for _, p := range paths {
			fmt.Println(p)
		}
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = fixture.Compress(bw, c, func(w io.Writer) error { return fixture.Large(w, files, mb<<20, seed) })
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
