package winvalidate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlanMount(t *testing.T) {
	// Hosts as hcsshim v0.15.0's checks see them.
	ltsc2022 := MountCaps{Host: "10.0.20348.2031", CimFS: true}
	ltsc2022Writer := MountCaps{Host: "10.0.20348.2031", CimFS: true, BlockWrite: true, VerifiedWrite: true} // cimwriter.dll
	build27766 := MountCaps{Host: "10.0.27766.1", CimFS: true, BlockMount: true, BlockWrite: true}
	build27800 := MountCaps{Host: "10.0.27800.1", CimFS: true, BlockMount: true, VerifiedMount: true, BlockWrite: true, VerifiedWrite: true}
	tests := []struct {
		name            string
		block, verified bool
		caps            MountCaps
		want            mountMethod
		unsupported     bool   // error wraps ErrMountUnsupported
		errHas          string // error mentions
	}{
		{name: "forked on 2022", caps: ltsc2022, want: mountForked},
		{name: "forked without CimFS", caps: MountCaps{Host: "10.0.17763.1"}, unsupported: true, errHas: "CimFS is not available on Windows 10.0.17763.1"},
		{name: "block on 2022", block: true, caps: ltsc2022, unsupported: true, errHas: "IsBlockCimMountSupported needs build >= 27766"},
		{name: "block on 2022 with cimwriter", block: true, caps: ltsc2022Writer, unsupported: true, errHas: "can write block CIMs (cimwriter.dll) but not mount them"},
		{name: "block on 27766", block: true, caps: build27766, want: mountBlock},
		{name: "verified block on 27766", block: true, verified: true, caps: build27766, unsupported: true, errHas: "IsVerifiedCimMountSupported needs build >= 27800"},
		{name: "verified block on 2022 with cimwriter", block: true, verified: true, caps: ltsc2022Writer, unsupported: true, errHas: "IsBlockCimMountSupported"},
		{name: "verified block on 27800", block: true, verified: true, caps: build27800, want: mountVerifiedBlock},
		{name: "plain block on 27800", block: true, caps: build27800, want: mountBlock},
		{name: "digest for a forked CIM", verified: true, caps: build27800, errHas: "only block CIMs are verified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planMount(`C:\cims\l.bcim`, tt.block, tt.verified, tt.caps)
			if tt.errHas == "" {
				if err != nil || got != tt.want {
					t.Fatalf("planMount = %v, %v; want %v", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) || !strings.Contains(err.Error(), `C:\cims\l.bcim`) {
				t.Fatalf("err = %v, want it to name the CIM and mention %q", err, tt.errHas)
			}
			if errors.Is(err, ErrMountUnsupported) != tt.unsupported {
				t.Errorf("errors.Is(err, ErrMountUnsupported) = %v, want %v", !tt.unsupported, tt.unsupported)
			}
		})
	}
}

func TestWithRootDigest(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	tests := []struct {
		in      string
		want    int // digest length, 0 for none
		wantErr bool
	}{
		{"", 0, false},
		{hex64, 32, false},
		{"sha256:" + hex64, 32, false},
		{hex64[:62], 0, true},
		{strings.Repeat("zz", 32), 0, true},
	}
	for _, tt := range tests {
		c, err := newMountConfig([]MountOption{WithRootDigest(tt.in)})
		if (err != nil) != tt.wantErr || len(c.rootDigest) != tt.want {
			t.Errorf("WithRootDigest(%q): digest %x, err %v; want %d bytes, error %v", tt.in, c.rootDigest, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), tt.in) {
			t.Errorf("error %v does not name the digest", err)
		}
	}
}

func TestAbsCIMPath(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"chain/layer.cim", "./layer.cim", "a/../layer.cim"} {
		got, err := AbsCIMPath(in)
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsAbs(got) || got != filepath.Join(wd, in) {
			t.Errorf("AbsCIMPath(%q) = %q, want %q", in, got, filepath.Join(wd, in))
		}
	}
	abs := filepath.Join(wd, "x.cim")
	if got, _ := AbsCIMPath(abs); got != abs {
		t.Errorf("AbsCIMPath(%q) = %q", abs, got)
	}
	if _, err := AbsCIMPath(""); err == nil {
		t.Error("empty path accepted")
	}
}
