package main

import "github.com/spf13/pflag"

// `cim validate` needs Windows (validate_windows.go); elsewhere it only says
// so (validate_other.go). Its usage, help text and flags are the same on
// every OS.

const validateUse = "validate CIM --layers LAYER..."

// validateLong opens the help of `cim validate`.
const validateLong = `Check a CIM against Windows' own CimFS driver: mount it, walk the mounted volume
(paths, types, sizes, content hashes, security descriptors, attributes, EAs, reparse
data, alternate streams, last-write times) and compare it with the merged view of the
layer files it was built from (base first). Exits 2 and lists the differences when they
differ. This is how a portable-built (experimental) CIM is checked against the driver.`

// validateFlags are the flags of `cim validate`.
type validateFlags struct {
	layers     []string
	rootDigest string
	jsonOut    bool
}

func (f *validateFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.layers, "layers", nil, "layer files, base first (repeat or comma-separate)")
	fs.StringVar(&f.rootDigest, "root-digest", "", "root digest (hex) of a verified block CIM, as recorded by the builder; default: the digest sealed in the CIM")
	fs.BoolVar(&f.jsonOut, "json", false, "print JSON on stdout")
}
