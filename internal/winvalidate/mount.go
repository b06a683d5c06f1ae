package winvalidate

import (
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// ErrMountUnsupported: this host's CimFS cannot mount this kind of CIM. A
// host may write block or verified CIMs (hcsshim's write checks also pass
// with cimwriter.dll) and still be unable to mount them; callers such as the
// integration tests treat this as "cannot check here", not as a failure.
var ErrMountUnsupported = errors.New("this host cannot mount the CIM")

// MountCaps are hcsshim's pkg/cimfs capability checks that decide which CIMs
// this host can mount (v0.15.0: IsCimFSSupported, IsBlockCimMountSupported
// — build >= 27766 — and IsVerifiedCimMountSupported — build >= 27800),
// plus the write checks, used only to explain a refusal.
type MountCaps struct {
	// Host spells the Windows build, for messages.
	Host string
	// CimFS is cimfs.IsCimFSSupported: forked CIMs mount.
	CimFS bool
	// BlockMount is cimfs.IsBlockCimMountSupported.
	BlockMount bool
	// VerifiedMount is cimfs.IsVerifiedCimMountSupported.
	VerifiedMount bool
	// BlockWrite is cimfs.IsBlockCimWriteSupported (true with cimwriter.dll).
	BlockWrite bool
	// VerifiedWrite is cimfs.IsVerifiedCimWriteSupported.
	VerifiedWrite bool
}

// mountMethod is the hcsshim call that mounts a CIM.
type mountMethod int

const (
	mountForked        mountMethod = iota // cimfs.Mount(cimPath, id, CimMountFlagNone)
	mountBlock                            // cimfs.Mount(blockPath\layer.cim, id, CimMountSingleFileCim)
	mountVerifiedBlock                    // cimfs.MountVerifiedBlockCIM(bcim, 0, id, rootDigest)
)

func (m mountMethod) String() string {
	switch m {
	case mountForked:
		return "forked"
	case mountBlock:
		return "block"
	case mountVerifiedBlock:
		return "verified block"
	}
	return fmt.Sprintf("mountMethod(%d)", int(m))
}

// planMount decides how the CIM at cimPath is mounted on a host with caps:
// a forked CIM needs CimFS; a block CIM needs block mount support; a block
// CIM with a root digest (a verified, integrity-protected CIM) is mounted
// with the digest and needs verified mount support. The error wraps
// ErrMountUnsupported and says when this host could have written the CIM.
func planMount(cimPath string, block, verified bool, caps MountCaps) (mountMethod, error) {
	if !caps.CimFS {
		return 0, fmt.Errorf("mount %s: CimFS is not available on Windows %s (need Windows Server 2022 10.0.20348.2031+ or build 26100+): %w", cimPath, caps.Host, ErrMountUnsupported)
	}
	if !block {
		if verified {
			return 0, fmt.Errorf("mount %s: a root digest was given for a forked CIM; only block CIMs are verified", cimPath)
		}
		return mountForked, nil
	}
	if !caps.BlockMount {
		return 0, fmt.Errorf("mount %s: block CIMs cannot be mounted on Windows %s (hcsshim's IsBlockCimMountSupported needs build >= 27766)%s: %w",
			cimPath, caps.Host, writableNote(caps.BlockWrite, "block"), ErrMountUnsupported)
	}
	if !verified {
		return mountBlock, nil
	}
	if !caps.VerifiedMount {
		return 0, fmt.Errorf("mount %s: verified (integrity) block CIMs cannot be mounted on Windows %s (hcsshim's IsVerifiedCimMountSupported needs build >= 27800)%s: %w",
			cimPath, caps.Host, writableNote(caps.VerifiedWrite, "verified"), ErrMountUnsupported)
	}
	return mountVerifiedBlock, nil
}

func writableNote(canWrite bool, kind string) string {
	if !canWrite {
		return ""
	}
	return "; this host can write " + kind + " CIMs (cimwriter.dll) but not mount them, so a CIM built here validates only on a newer host"
}

// rootHashSize is the length of a verified block CIM's root digest
// (hcsshim's cimHashSize, SHA-256).
const rootHashSize = 32

// parseRootDigest decodes a verified block CIM's root digest as the builder
// records it (BuiltLayer.IntegrityDigest, the artifact's integrity
// annotation): 64 hex digits, optionally prefixed "sha256:".
func parseRootDigest(s string) ([]byte, error) {
	h := strings.TrimPrefix(s, "sha256:")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != rootHashSize {
		return nil, fmt.Errorf("root digest %q: want %d hex digits", s, 2*rootHashSize)
	}
	return b, nil
}

// MountOption configures Mount and MountedView.
type MountOption func(*mountConfig) error

type mountConfig struct {
	rootDigest []byte
}

// WithRootDigest mounts a verified (integrity) block CIM with its root
// digest (hex, as BuiltLayer.IntegrityDigest records it), the way hcsshim
// mounts verified CIMs (cimfs.MountVerifiedBlockCIM). Every read from the
// volume is then checked against it. An empty digest is ignored.
func WithRootDigest(hexDigest string) MountOption {
	return func(c *mountConfig) error {
		if hexDigest == "" {
			return nil
		}
		d, err := parseRootDigest(hexDigest)
		if err != nil {
			return err
		}
		c.rootDigest = d
		return nil
	}
}

func newMountConfig(opts []MountOption) (mountConfig, error) {
	var c mountConfig
	for _, o := range opts {
		if err := o(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

// AbsCIMPath makes a CIM path absolute and clean before it reaches CimFS:
// hcsshim splits it into directory and name for CimMountImage, and its
// callers pass absolute paths (containerd's CimFS snapshotter builds them
// from its plugin root); what the API does with a relative directory is not
// documented.
func AbsCIMPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("CIM path is empty")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("CIM path %s: %w", p, err)
	}
	return abs, nil
}
