package wclayertest

import "github.com/cimconv/cimconv/internal/wclayer/fixture"

// Types.
type (
	Layer       = fixture.Layer
	Compression = fixture.Compression
	EntryOption = fixture.EntryOption
	ACE         = fixture.ACE
)

// Compressions.
const (
	Uncompressed = fixture.Uncompressed
	Gzip         = fixture.Gzip
	Zstd         = fixture.Zstd
)

// Well-known SIDs.
const (
	SIDAdministrators   = fixture.SIDAdministrators
	SIDUsers            = fixture.SIDUsers
	SIDSystem           = fixture.SIDSystem
	SIDTrustedInstaller = fixture.SIDTrustedInstaller
	SIDEveryone         = fixture.SIDEveryone
)

// Fixture names.
const (
	DeepDepth    = fixture.DeepDepth
	ZeroFileSize = fixture.ZeroFileSize
)

// Functions and values.
var (
	NewLayer         = fixture.NewLayer
	WithSD           = fixture.WithSD
	WithAttributes   = fixture.WithAttributes
	WithEA           = fixture.WithEA
	WithTimes        = fixture.WithTimes
	WithMountPoint   = fixture.WithMountPoint
	Compress         = fixture.Compress
	BaseLayer        = fixture.BaseLayer
	AppLayer         = fixture.AppLayer
	DeltaHiveLayer   = fixture.DeltaHiveLayer
	Chain            = fixture.Chain
	WriteSampleChain = fixture.WriteSampleChain
	Large            = fixture.Large
	Hive             = fixture.Hive
	PE               = fixture.PE
	SD               = fixture.SD
	ParseSID         = fixture.ParseSID

	SDAdminsFull       = fixture.SDAdminsFull
	SDSystemOnly       = fixture.SDSystemOnly
	SDTrustedInstaller = fixture.SDTrustedInstaller
	LongNamePath       = fixture.LongNamePath
	DeepPath           = fixture.DeepPath
	DefaultTime        = fixture.DefaultTime
)
