//go:build !windows

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func init() { cimSubcommands = append(cimSubcommands, newCimValidateCmd) }

// errValidateNeedsWindows is what `cim validate` says off Windows.
var errValidateNeedsWindows = errors.New("cim validate mounts the CIM with CimFS and needs Windows; use `cim verify` on this OS")

func newCimValidateCmd(*globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate CIM --layers LAYER...",
		Short: "Mount a CIM with CimFS and compare the volume with its layers (Windows only)",
		Long: validateLong + `

This needs Windows (CimFS). On this OS use ` + "`converter cim verify`" + `, which reads
the CIM with the pure-Go reader instead of the driver.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(*cobra.Command, []string) error { return errValidateNeedsWindows },
	}
	cmd.Flags().StringSlice("layers", nil, "layer files, base first (repeat or comma-separate)")
	cmd.Flags().String("root-digest", "", "root digest (hex) of a verified block CIM, as recorded by the builder; default: the digest sealed in the CIM")
	cmd.Flags().Bool("json", false, "print JSON on stdout")
	return cmd
}

// validateLong opens the help of `cim validate` (the same text on every OS).
const validateLong = `Check a CIM against Windows' own CimFS driver: mount it, walk the mounted volume
(paths, types, sizes, content hashes, security descriptors, attributes, EAs, reparse
data, alternate streams, last-write times) and compare it with the merged view of the
layer files it was built from (base first). Exits 2 and lists the differences when they
differ. This is how a portable-built (experimental) CIM is checked against the driver.`
