package registry

import (
	"fmt"
	"strconv"
	"strings"
)

// Windows build numbers of the long-term servicing (LTSC) releases that keep
// the stable container ABI, ascending. Source: Microsoft's "Windows container
// version compatibility" page and hcsshim v0.15.0 osversion
// (CheckHostAndContainerCompat), which lists LTSC2022 and LTSC2025. Not
// validated by this project on Windows hosts.
var stableABIReleases = []int{20348, 26100}

// The OSVersionPolicy modes.
const (
	OSVersionAll        = "all"
	OSVersionExact      = "exact"
	OSVersionCompatible = "compatible"
)

// OSVersionPolicy selects which Windows os.version values of an index to
// convert.
//
//   - all: every Windows manifest (of the requested architecture).
//   - exact: Version is either a full "10.0.20348.2031" (string match) or a
//     build "20348" (any revision of that build).
//   - compatible: Version is the host: a build "26100" (major.minor 10.0
//     assumed) or "10.0.26100[.rev]". An image matches when it would run
//     process-isolated on that host under Windows' stable-ABI rule: same
//     major.minor; hosts below 20348 need the exact same build; hosts at or
//     above 20348 accept images from the newest LTSC strictly older than the
//     host (20348 for hosts 20349..26100, 26100 above that; for host 20348
//     itself, 20348) up to the host's own build.
type OSVersionPolicy struct {
	Mode    string
	Version string
}

// ParseOSVersionPolicy parses "all", "exact:V" or a bare V (exact), and
// "compatible:V".
func ParseOSVersionPolicy(s string) (OSVersionPolicy, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == OSVersionAll:
		return OSVersionPolicy{Mode: OSVersionAll}, nil
	case strings.HasPrefix(s, OSVersionCompatible+":"):
		v := strings.TrimPrefix(s, OSVersionCompatible+":")
		if _, err := parseWinVersion(v); err != nil {
			return OSVersionPolicy{}, fmt.Errorf("os.version policy %q: %w", s, err)
		}
		return OSVersionPolicy{Mode: OSVersionCompatible, Version: v}, nil
	default:
		v := strings.TrimPrefix(s, OSVersionExact+":")
		if _, err := parseWinVersion(v); err != nil {
			return OSVersionPolicy{}, fmt.Errorf("os.version policy %q (want all, a build like 20348, a version like 10.0.20348.2031, or compatible:BUILD): %w", s, err)
		}
		return OSVersionPolicy{Mode: OSVersionExact, Version: v}, nil
	}
}

// String is the inverse of ParseOSVersionPolicy.
func (p OSVersionPolicy) String() string {
	switch p.Mode {
	case "", OSVersionAll:
		return OSVersionAll
	case OSVersionExact:
		return p.Version
	default:
		return p.Mode + ":" + p.Version
	}
}

// Match reports whether an image with this os.version is selected.
func (p OSVersionPolicy) Match(osVersion string) bool {
	if p.Mode == "" || p.Mode == OSVersionAll {
		return true
	}
	want, err := parseWinVersion(p.Version)
	if err != nil {
		return false
	}
	got, err := parseWinVersion(osVersion)
	if err != nil || !got.full {
		return false
	}
	switch p.Mode {
	case OSVersionExact:
		if want.full {
			return want.major == got.major && want.minor == got.minor && want.build == got.build &&
				(!want.hasRev || want.rev == got.rev)
		}
		return want.build == got.build && got.major == 10 && got.minor == 0
	case OSVersionCompatible:
		return stableABICompatible(want, got)
	}
	return false
}

func stableABICompatible(host, image winVersion) bool {
	if host.major != image.major || host.minor != image.minor {
		return false
	}
	if host.build < stableABIReleases[0] {
		return host.build == image.build
	}
	oldest := stableABIReleases[0]
	for i := len(stableABIReleases) - 1; i >= 0; i-- {
		if host.build > stableABIReleases[i] {
			oldest = stableABIReleases[i]
			break
		}
	}
	return image.build >= oldest && image.build <= host.build
}

// winVersion is major.minor.build[.revision]; a bare build parses with
// major.minor = 10.0 and full = false.
type winVersion struct {
	major, minor, build, rev int
	full                     bool // given as major.minor.build[.rev]
	hasRev                   bool
}

func parseWinVersion(s string) (winVersion, error) {
	parts := strings.Split(s, ".")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n > 1<<31-1 || strings.TrimLeft(p, "0123456789") != "" {
			return winVersion{}, fmt.Errorf("invalid Windows version %q", s)
		}
		nums[i] = n
	}
	switch len(nums) {
	case 1:
		return winVersion{major: 10, minor: 0, build: nums[0]}, nil
	case 3:
		return winVersion{major: nums[0], minor: nums[1], build: nums[2], full: true}, nil
	case 4:
		return winVersion{major: nums[0], minor: nums[1], build: nums[2], rev: nums[3], full: true, hasRev: true}, nil
	}
	return winVersion{}, fmt.Errorf("invalid Windows version %q: want BUILD or MAJOR.MINOR.BUILD[.REV]", s)
}
