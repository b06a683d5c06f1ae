// Package builder defines the interface every CIM builder implements and the
// types passed between the conversion pipeline and a builder.
//
// It owns the contract and the few helpers every builder needs (ChainID,
// SideDir, ContextReader, LinkOrCopy, Select): the portable pure-Go builder
// lives in builder/portable, the Windows CimFS builder in builder/hcsshim.
// Package builder must not import the registry, queue or any concrete
// builder.
package builder
