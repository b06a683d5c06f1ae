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
		Use:   validateUse,
		Short: "Mount a CIM with CimFS and compare the volume with its layers (Windows only)",
		Long: validateLong + `

This needs Windows (CimFS). On this OS use ` + "`converter cim verify`" + `, which reads
the CIM with the pure-Go reader instead of the driver.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(*cobra.Command, []string) error { return errValidateNeedsWindows },
	}
	new(validateFlags).register(cmd.Flags()) // for the help: the command only refuses
	return cmd
}
