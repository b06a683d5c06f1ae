package hcsshim

import (
	"errors"
	"fmt"

	"github.com/cimconv/cimconv/internal/builder"
)

// Windows builds that matter to CimFS (see hcsshim osversion and
// pkg/cimfs.IsCimFSSupported).
const (
	buildLTSC2022       = 20348 // Windows Server 2022
	minRevisionLTSC2022 = 2031  // CimFS was backported to LTSC2022 at this revision
	buildLTSC2025       = 26100 // Windows Server 2025: CimFS on every revision
)

var (
	// ErrUnsupportedBuild: the host's Windows build has no usable CimFS.
	ErrUnsupportedBuild = fmt.Errorf("Windows build without CimFS support (need 10.0.20348 revision >= 2031, or build >= 26100): %w", builder.ErrUnavailable)
	// ErrCimFSMissing: the build qualifies but CimFS (cimfs.sys / its API) is not present.
	ErrCimFSMissing = fmt.Errorf("CimFS is not available on this host: %w", builder.ErrUnavailable)
	// ErrFormatUnsupported: the requested CIM format or option needs a newer build.
	ErrFormatUnsupported = errors.New("CIM format not supported on this host")
)

// HostInfo is what the builder learns about the Windows host at start-up.
type HostInfo struct {
	Major, Minor uint32
	Build        uint32
	Revision     uint32 // UBR; 0 when it could not be read
	// CimFS is hcsshim's cimfs.IsCimFSSupported (build check and API present).
	CimFS bool
	// BlockCIMWrite is cimfs.IsBlockCimWriteSupported.
	BlockCIMWrite bool
	// VerifiedCIMWrite is cimfs.IsVerifiedCimWriteSupported.
	VerifiedCIMWrite bool
}

// String spells the build like `ver` does: "10.0.20348.2031".
func (h HostInfo) String() string {
	return fmt.Sprintf("%d.%d.%d.%d", h.Major, h.Minor, h.Build, h.Revision)
}

// buildSupportsCimFS is the OS-build half of the CimFS support decision.
func (h HostInfo) buildSupportsCimFS() bool {
	return h.Build >= buildLTSC2025 || (h.Build == buildLTSC2022 && h.Revision >= minRevisionLTSC2022)
}

// checkHost decides whether the builder can run with cfg on host h and
// returns the formats it can write there.
func checkHost(h HostInfo, cfg config) ([]string, error) {
	if !h.buildSupportsCimFS() {
		return nil, fmt.Errorf("host Windows %s: %w", h, ErrUnsupportedBuild)
	}
	if !h.CimFS {
		return nil, fmt.Errorf("host Windows %s: %w", h, ErrCimFSMissing)
	}
	formats := []string{builder.FormatForked}
	if h.BlockCIMWrite {
		formats = append(formats, builder.FormatBlock)
	}
	if cfg.format == builder.FormatBlock && !h.BlockCIMWrite {
		return nil, fmt.Errorf("block CIMs on Windows %s (hcsshim requires build >= 27766 or CimWriter): %w", h, ErrFormatUnsupported)
	}
	if cfg.integrity && !h.VerifiedCIMWrite {
		return nil, fmt.Errorf("verified (integrity) block CIMs on Windows %s (hcsshim requires build >= 27800 or CimWriter): %w", h, ErrFormatUnsupported)
	}
	return formats, nil
}
