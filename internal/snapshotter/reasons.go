package snapshotter

import (
	"context"
	"errors"
	"fmt"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
)

// Fall-through reasons: the label values of
// cimconv_snapshotter_fallthrough_total. The vocabulary is fixed.
const (
	ReasonUntrusted    = "untrusted"         // no verifier configured, or the verifier refused the artifact
	ReasonNoArtifact   = "no-artifact"       // the image has no cimconv artifact
	ReasonIncompatible = "incompatible"      // artifacts exist, none usable on this node (build, CIM format)
	ReasonBinding      = "binding"           // the artifact does not belong to this manifest/layer/diffID/chainID
	ReasonDigest       = "digest"            // a blob did not match its digest, or is malformed
	ReasonParent       = "parent-provenance" // the parent snapshot is not the one the CIM was forked from
	ReasonRegistry     = "registry"          // the registry failed (unreachable, 5xx, auth)
	ReasonTimeout      = "timeout"           // the fast path took longer than its timeout
	ReasonConflict     = "conflict"          // files of this layer are already on disk without a snapshot owning them
	ReasonInternal     = "internal"          // a local failure (disk, snapshotter)
)

// fallThrough is why a layer is handed back to containerd's normal path.
type fallThrough struct {
	reason string
	err    error
}

func (f *fallThrough) Error() string {
	return fmt.Sprintf("fast path not taken (%s): %v", f.reason, f.err)
}
func (f *fallThrough) Unwrap() error { return f.err }

func fall(reason string, format string, args ...any) *fallThrough {
	return &fallThrough{reason: reason, err: fmt.Errorf(format, args...)}
}

// classify maps an error onto a reason. ctx is the fast path's own context:
// its deadline turns any error into a timeout.
func classify(ctx context.Context, err error) *fallThrough {
	var ft *fallThrough
	switch {
	case errors.As(err, &ft):
		if ctx.Err() != nil && ft.reason == ReasonRegistry {
			return &fallThrough{reason: ReasonTimeout, err: err}
		}
		return ft
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return &fallThrough{reason: ReasonTimeout, err: err}
	case errors.Is(err, trust.ErrUntrusted):
		return &fallThrough{reason: ReasonUntrusted, err: err}
	case errors.Is(err, registry.ErrDigestMismatch), errors.Is(err, artifact.ErrBlob):
		return &fallThrough{reason: ReasonDigest, err: err}
	case isRegistryErr(err):
		return &fallThrough{reason: ReasonRegistry, err: err}
	default:
		return &fallThrough{reason: ReasonInternal, err: err}
	}
}

func isRegistryErr(err error) bool {
	var re *registry.Error
	return errors.As(err, &re)
}
