package main

import "github.com/spf13/cobra"

// cimSubcommands are the `converter cim ...` commands; each registers itself
// from its own file.
var cimSubcommands []func(*globalFlags) *cobra.Command

func init() { registeredCommands = append(registeredCommands, newCimCmd) }

func newCimCmd(g *globalFlags) *cobra.Command {
	return newGroupCmd("cim", "Build, list, read, inspect and verify CIMs locally", cimLong,
		newCommands(g, cimSubcommands)...)
}

const cimLong = `Work with CimFS images (CIMs) on local files, without a registry.

The pure-Go (portable) writer is EXPERIMENTAL: its output has not been validated
against Windows' CimFS.dll.`
