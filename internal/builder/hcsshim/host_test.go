package hcsshim

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/builder"
)

func TestCheckHost(t *testing.T) {
	forked := config{format: builder.FormatForked}
	block := config{format: builder.FormatBlock}
	blockIntegrity := config{format: builder.FormatBlock, integrity: true}
	h := func(build, rev uint32, cimfs, blockW, verifiedW bool) HostInfo {
		return HostInfo{Major: 10, Build: build, Revision: rev, CimFS: cimfs, BlockCIMWrite: blockW, VerifiedCIMWrite: verifiedW}
	}
	tests := []struct {
		name        string
		host        HostInfo
		cfg         config
		wantFormats []string
		errIs       error
	}{
		{"ltsc2022 at 2031", h(20348, 2031, true, false, false), forked, []string{"forked"}, nil},
		{"ltsc2022 after 2031", h(20348, 3207, true, false, false), forked, []string{"forked"}, nil},
		{"ltsc2022 before 2031", h(20348, 2030, true, false, false), forked, nil, ErrUnsupportedBuild},
		{"ltsc2022 revision unreadable", h(20348, 0, true, false, false), forked, nil, ErrUnsupportedBuild},
		{"windows 11 22h2 is not supported", h(22621, 4000, true, false, false), forked, nil, ErrUnsupportedBuild},
		{"server 23h2 is not supported", h(25398, 1000, true, false, false), forked, nil, ErrUnsupportedBuild},
		{"ltsc2019", h(17763, 6000, false, false, false), forked, nil, ErrUnsupportedBuild},
		{"ltsc2025 any revision", h(26100, 1, true, false, false), forked, []string{"forked"}, nil},
		{"ltsc2025 without CimFS", h(26100, 1, false, false, false), forked, nil, ErrCimFSMissing},
		{"block on ltsc2025", h(26100, 1, true, false, false), block, nil, ErrFormatUnsupported},
		{"block with CimWriter", h(26100, 1, true, true, false), block, []string{"forked", "block"}, nil},
		{"integrity without verified CIMs", h(26100, 1, true, true, false), blockIntegrity, nil, ErrFormatUnsupported},
		{"integrity on a new build", h(27800, 1, true, true, true), blockIntegrity, []string{"forked", "block"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkHost(tt.host, tt.cfg)
			if tt.errIs != nil {
				if !errors.Is(err, tt.errIs) {
					t.Fatalf("err = %v, want %v", err, tt.errIs)
				}
				if !strings.Contains(err.Error(), tt.host.String()) {
					t.Errorf("err %q does not name the host build %s", err, tt.host)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.wantFormats) {
				t.Errorf("formats = %v, want %v", got, tt.wantFormats)
			}
		})
	}
}

func TestCheckHostUnavailableMeansAutoFallsBack(t *testing.T) {
	// builder.Select falls back to portable only on ErrUnavailable: an old
	// build must qualify, an unsupported requested format must not.
	_, err := checkHost(HostInfo{Build: 17763}, config{format: builder.FormatForked})
	if !errors.Is(err, builder.ErrUnavailable) {
		t.Errorf("old build: %v does not wrap builder.ErrUnavailable", err)
	}
	_, err = checkHost(HostInfo{Build: 26100, CimFS: true}, config{format: builder.FormatBlock})
	if errors.Is(err, builder.ErrUnavailable) {
		t.Errorf("unsupported block format: %v wraps builder.ErrUnavailable; auto would silently write forked CIMs", err)
	}
}

func TestHostInfoString(t *testing.T) {
	if got := (HostInfo{Major: 10, Minor: 0, Build: 20348, Revision: 2031}).String(); got != "10.0.20348.2031" {
		t.Errorf("String() = %q", got)
	}
}

// Capabilities name everything the builder's output depends on (the chain
// cache and the artifact's options key are made of them): format, Windows
// build and the block CIM options.
func TestCapabilities(t *testing.T) {
	tests := []struct {
		cfg  config
		want builder.Capabilities
	}{
		{config{format: builder.FormatForked}, builder.Capabilities{Format: "forked"}},
		{config{format: builder.FormatBlock}, builder.Capabilities{Format: "block"}},
		{config{format: builder.FormatBlock, integrity: true, vhdFooter: true}, builder.Capabilities{Format: "block", Integrity: true, VHDFooter: true}},
	}
	for _, tt := range tests {
		b, err := newBuilder(tt.cfg, HostInfo{Major: 10, Build: 26100, Revision: 4349, CimFS: true, BlockCIMWrite: true, VerifiedCIMWrite: true}, &fakeImporter{})
		if err != nil {
			t.Fatal(err)
		}
		want := tt.want
		want.Name, want.Formats, want.WindowsBuild, want.HiveMerge = "hcsshim", []string{"forked", "block"}, "10.0.26100.4349", true
		if got := b.Capabilities(); !reflect.DeepEqual(got, want) {
			t.Errorf("Capabilities() = %+v, want %+v", got, want)
		}
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name   string
		opts   []Option
		want   config
		errHas string
	}{
		{name: "defaults", want: config{format: builder.FormatForked}},
		{name: "block with integrity and footer", opts: []Option{WithFormat(builder.FormatBlock), WithIntegrity(true), WithVHDFooter(true), WithWorkDir("w")},
			want: config{format: builder.FormatBlock, integrity: true, vhdFooter: true, workDir: "w"}},
		{name: "integrity on forked", opts: []Option{WithIntegrity(true)}, errHas: "block CIMs only"},
		{name: "footer on forked", opts: []Option{WithVHDFooter(true)}, errHas: "block CIMs only"},
		{name: "unknown format", opts: []Option{WithFormat("vhd")}, errHas: `format "vhd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := newConfig(tt.opts)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.log == nil {
				t.Error("no default logger")
			}
			got.log = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config = %+v, want %+v", got, tt.want)
			}
		})
	}
}
