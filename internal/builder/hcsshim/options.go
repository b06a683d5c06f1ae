package hcsshim

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
)

// Option configures the builder.
type Option func(*config)

type config struct {
	format    string
	integrity bool
	vhdFooter bool
	log       *zap.Logger
	workDir   string
}

// WithFormat selects the CIM format to write: builder.FormatForked (the
// default) or builder.FormatBlock (single-file block CIMs, newer Windows
// builds only).
func WithFormat(format string) Option { return func(c *config) { c.format = format } }

// WithIntegrity writes verified block CIMs and records their root digest in
// BuiltLayer.IntegrityDigest. Block format only.
func WithIntegrity(on bool) Option { return func(c *config) { c.integrity = on } }

// WithVHDFooter appends a VHD footer to each block CIM so it can be attached
// as a disk. Block format only.
func WithVHDFooter(on bool) Option { return func(c *config) { c.vhdFooter = on } }

// WithLogger sets the logger; the default discards logs.
func WithLogger(l *zap.Logger) Option { return func(c *config) { c.log = l } }

// WithWorkDir sets the root under which each layer's side directory
// (Hives/*_BASE, layout, and hcsshim's intermediate files) is created, as
// builder.SideDir(workDir, chainID). By default, and preferably, the root is
// the chain directory passed to BuildLayer, where convert also unpacks cached
// parents; a shared work dir makes concurrent builds of one chainID collide.
func WithWorkDir(dir string) Option { return func(c *config) { c.workDir = dir } }

func newConfig(opts []Option) (config, error) {
	c := config{format: builder.FormatForked}
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	switch c.format {
	case builder.FormatForked:
		if c.integrity || c.vhdFooter {
			return c, fmt.Errorf("integrity and VHD footer apply to block CIMs only, not to %q CIMs", c.format)
		}
	case builder.FormatBlock:
	default:
		return c, fmt.Errorf("CIM format %q: want %q or %q", c.format, builder.FormatForked, builder.FormatBlock)
	}
	return c, nil
}
