package containerdtest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/unpack"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// WindowsAMD64 is the platform the tests pull.
var WindowsAMD64 = ocispec.Platform{OS: "windows", Architecture: "amd64"}

// Pull fetches ref (plain HTTP to loopback registries) and unpacks it for
// windows/amd64 into snapshotter with containerd's unpacker, wrapping the
// handlers with snapshotters.AppendInfoHandlerWrapper as CRI does for remote
// snapshotters; layers the snapshotter does not skip are applied by a.
func Pull(ctx context.Context, c *containerd.Client, ref, snapshotter string, a diff.Applier) (images.Image, error) {
	ctx, done, err := c.WithLease(ctx)
	if err != nil {
		return images.Image{}, err
	}
	defer done(context.WithoutCancel(ctx))
	match := platforms.Only(WindowsAMD64)
	u, err := unpack.NewUnpacker(ctx, c.ContentStore(), unpack.WithUnpackPlatform(unpack.Platform{
		Platform:       match,
		SnapshotterKey: snapshotter,
		Snapshotter:    c.SnapshotService(snapshotter),
		Applier:        a,
	}))
	if err != nil {
		return images.Image{}, err
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost))})
	img, err := c.Fetch(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPlatformMatcher(match),
		containerd.WithImageHandlerWrapper(func(h images.Handler) images.Handler {
			return u.Unpack(snapshotters.AppendInfoHandlerWrapper(ref)(h))
		}))
	if err != nil {
		u.Wait()
		return images.Image{}, fmt.Errorf("fetch %s: %w", ref, err)
	}
	if _, err := u.Wait(); err != nil {
		return images.Image{}, fmt.Errorf("unpack %s: %w", ref, err)
	}
	return img, nil
}

// StandInApplier stands in for containerd's Windows cimfs differ, which
// cannot run here: it checks it was given one CimFS mount, decompresses the
// layer from the content store, writes its diffID to a marker file in the
// snapshot's directory and returns the diffID, as an applier must. It
// records every layer it was handed.
type StandInApplier struct {
	Store content.Store

	mu      sync.Mutex
	applied []digest.Digest
}

// MarkerName is the file Apply writes into the snapshot directory.
const MarkerName = "standin-applied"

// Applied lists the layer digests handed to the normal path, in order.
func (a *StandInApplier) Applied() []digest.Digest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]digest.Digest(nil), a.applied...)
}

// Apply implements diff.Applier.
func (a *StandInApplier) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, _ ...diff.ApplyOpt) (ocispec.Descriptor, error) {
	if len(mounts) != 1 || mounts[0].Type != "CimFS" {
		return ocispec.Descriptor{}, fmt.Errorf("stand-in applier: want one CimFS mount, got %+v", mounts)
	}
	ra, err := a.Store.ReaderAt(ctx, desc)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer ra.Close()
	ds, err := compression.DecompressStream(content.NewReader(ra))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer ds.Close()
	h := sha256.New()
	n, err := io.Copy(h, ds)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	diffID := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	if err := os.WriteFile(filepath.Join(mounts[0].Source, MarkerName), []byte(diffID.String()), 0o600); err != nil {
		return ocispec.Descriptor{}, err
	}
	a.mu.Lock()
	a.applied = append(a.applied, desc.Digest)
	a.mu.Unlock()
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: diffID, Size: n}, nil
}
