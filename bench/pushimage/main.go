// Command pushimage pushes gzip-compressed layer tars as one Windows image
// (devenv.WindowsImage) to a registry, for benchmark scripts. It prints the
// image's digest reference on the first line, then one layer digest per
// line, in layer order.
//
//	go run ./bench/pushimage -ref 127.0.0.1:5000/bench/big:latest base.tar.gz app1.tar.gz
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/cimconv/cimconv/internal/devenv"
)

func main() {
	ref := flag.String("ref", "", "image reference to push to (plain HTTP); required")
	osVersion := flag.String("os-version", devenv.SampleOSVersion, "os.version of the image config")
	flag.Parse()
	if err := run(context.Background(), *ref, *osVersion, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "pushimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, ref, osVersion string, files []string) error {
	if ref == "" || len(files) == 0 {
		return fmt.Errorf("usage: pushimage -ref REF LAYER.tar.gz...")
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("-ref %q: %w", ref, err)
	}
	var layers [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		layers = append(layers, b)
	}
	img, err := devenv.WindowsImage(layers, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: osVersion})
	if err != nil {
		return err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	fmt.Println(r.Context().Digest(d.String()).String())
	for _, l := range ls {
		ld, err := l.Digest()
		if err != nil {
			return err
		}
		fmt.Println(ld.String())
	}
	return nil
}
