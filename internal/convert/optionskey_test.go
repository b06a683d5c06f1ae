package convert

import (
	"context"
	"errors"
	"testing"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
)

// capsBuilder is a builder known only by its capabilities.
type capsBuilder builder.Capabilities

func (b capsBuilder) Capabilities() builder.Capabilities { return builder.Capabilities(b) }

func (b capsBuilder) BuildLayer(context.Context, builder.LayerSource, *builder.BuiltLayer, string) (*builder.BuiltLayer, error) {
	return nil, errors.New("capsBuilder builds nothing")
}

var (
	portableMerge  = portable.New().Capabilities()
	portableRefuse = portable.New(portable.WithHiveMerge(portable.HiveMergeRefuse)).Capabilities()
	hcsForked      = builder.Capabilities{Name: "hcsshim", Format: builder.FormatForked, WindowsBuild: "10.0.20348.2031", HiveMerge: true}
	hcsBlock       = builder.Capabilities{Name: "hcsshim", Format: builder.FormatBlock, WindowsBuild: "10.0.26100.4349", HiveMerge: true}
)

// The options key of the portable builder is what it was before the key
// named more than builder and format (its artifacts and cache entries keep
// matching), whether it merges delta hives or refuses them (the merge is
// checked on each layer instead); hcsshim's names the Windows build and the
// block CIM options.
func TestOptionsKey(t *testing.T) {
	withBlockOptions := hcsBlock
	withBlockOptions.Integrity, withBlockOptions.VHDFooter = true, true
	tests := []struct {
		name string
		caps builder.Capabilities
		want string
	}{
		{"portable, --hive-merge=portable", portableMerge, "builder=portable,format=forked"},
		{"portable, --hive-merge=refuse", portableRefuse, "builder=portable,format=forked"},
		{"hcsshim forked", hcsForked, "builder=hcsshim,format=forked,windows-build=10.0.20348.2031"},
		{"hcsshim block, integrity and VHD footer", withBlockOptions, "builder=hcsshim,format=block,windows-build=10.0.26100.4349,integrity,vhd-footer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := New(nil, capsBuilder(tt.caps), nil).OptionsKey(); got != tt.want {
				t.Errorf("OptionsKey() = %q, want %q", got, tt.want)
			}
		})
	}
}

// A cache entry (local, or another worker's in the shared cache) is reused
// only when it is what the converter's builder would write: entries written
// before they recorded their options key are read as what their build
// provably is, and a layer holding a pure-Go hive merge only by a builder
// that does that merge.
func TestReusable(t *testing.T) {
	entry := func(b artifact.BuildInfo, options string) CacheEntry {
		return CacheEntry{ChainID: "sha256:c", PackedLayer: artifact.PackedLayer{Build: b}, Options: options}
	}
	portableBuild := artifact.BuildInfo{Builder: "portable", Format: builder.FormatForked, CimVersion: "3.0", Experimental: true}
	mergedBuild := portableBuild
	mergedBuild.HiveMerge = builder.HiveMergePortable
	hcsForkedBuild := artifact.BuildInfo{Builder: "hcsshim", Format: builder.FormatForked, CimVersion: "3.0", WindowsBuild: hcsForked.WindowsBuild}
	hcsBlockBuild := artifact.BuildInfo{Builder: "hcsshim", Format: builder.FormatBlock, WindowsBuild: hcsBlock.WindowsBuild}
	laterRevision := hcsForked
	laterRevision.WindowsBuild = "10.0.20348.2113"
	withFooter := hcsBlock
	withFooter.VHDFooter = true
	portableBlock := portableMerge
	portableBlock.Format = builder.FormatBlock

	tests := []struct {
		name  string
		e     CacheEntry
		caps  builder.Capabilities
		reuse bool
	}{
		{"older portable entry, merging worker", entry(portableBuild, ""), portableMerge, true},
		{"older portable entry, refusing worker", entry(portableBuild, ""), portableRefuse, true},
		{"older merged entry, merging worker", entry(mergedBuild, ""), portableMerge, true},
		{"older merged entry, refusing worker", entry(mergedBuild, ""), portableRefuse, false},
		{"merged entry, refusing worker", entry(mergedBuild, "builder=portable,format=forked"), portableRefuse, false},
		{"portable entry, block-format worker", entry(portableBuild, "builder=portable,format=forked"), portableBlock, false},
		{"portable entry, hcsshim worker", entry(portableBuild, ""), hcsForked, false},
		{"older hcsshim forked entry, same Windows build", entry(hcsForkedBuild, ""), hcsForked, true},
		{"older hcsshim forked entry, later revision", entry(hcsForkedBuild, ""), laterRevision, false},
		// Nothing recorded whether it had a VHD footer.
		{"older block entry", entry(hcsBlockBuild, ""), hcsBlock, false},
		{"block entry", entry(hcsBlockBuild, optionsKey(hcsBlock)), hcsBlock, true},
		{"block entry, worker adding a VHD footer", entry(hcsBlockBuild, optionsKey(hcsBlock)), withFooter, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := New(nil, capsBuilder(tt.caps), nil).reusable(tt.e); got != tt.reuse {
				t.Errorf("reusable = %v, want %v (entry built with %q, converter %q)", got, tt.reuse, tt.e.builtWith(), optionsKey(tt.caps))
			}
		})
	}
}
