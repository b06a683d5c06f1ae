// Package hcsshim is the production builder for Windows worker nodes: it
// imports layers with Windows' CimFS through github.com/Microsoft/hcsshim
// (pkg/ociwclayer/cim: forked CIMs by default, single-file block CIMs where
// the OS supports them), which also merges non-base layers' delta registry
// hives with offreg.
//
// The CimFS calls and host probing are in _windows.go files; on other systems
// New returns an error saying the builder needs Windows. Everything around
// the import (options, the host capability decision, naming, decompression,
// diffID check, carrying base hives forward, cleanup of a failed import) is
// platform-neutral and unit-tested on Linux with a fake importer.
//
// It owns the files it creates in the CIM directory and side directories; it
// must not import the registry, queue or convert packages.
package hcsshim
