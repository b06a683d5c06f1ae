package convert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
)

// pushConcurrency bounds parallel blob uploads.
const pushConcurrency = 3

// push uploads the layer blobs (in parallel), then the config, then the
// manifest last.
func (c *Converter) push(ctx context.Context, t registry.Target, jobs []*layerJob, cfgBytes, manifest []byte) (string, error) {
	repo := t.Ref.Context()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pushConcurrency)
	for _, j := range jobs {
		g.Go(func() error { return safely("push", func() error { return c.pushLayer(gctx, repo, j) }) })
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	cfgDesc := artifact.ConfigDescriptor(cfgBytes)
	if err := c.reg.PushBlob(ctx, repo, cfgDesc, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cfgBytes)), nil }); err != nil {
		return "", fmt.Errorf("push artifact config: %w", err)
	}
	subject := v1.Descriptor{MediaType: t.Descriptor.MediaType, Digest: t.Descriptor.Digest, Size: t.Descriptor.Size}
	d, err := c.reg.PushArtifact(ctx, repo, manifest, types.OCIManifestSchema1, subject)
	if err != nil {
		return "", fmt.Errorf("push artifact manifest: %w", err)
	}
	c.publishShared(ctx, repo, jobs)
	if err := c.sign(ctx, repo, d, manifest, cfgBytes); err != nil {
		return "", err
	}
	c.obs.Bytes("pushed", int64(len(manifest)+len(cfgBytes)))
	return d.String(), nil
}

// pushLayer uploads one layer blob (mounting it from another repository of
// the registry that has it) and records the repository in the cache.
func (c *Converter) pushLayer(ctx context.Context, repo name.Repository, j *layerJob) error {
	desc, err := j.entry.Descriptor()
	if err != nil {
		return err
	}
	var mounts []name.Repository
	for _, r := range j.entry.Repos {
		if r == repo.String() {
			continue
		}
		if mr, err := name.NewRepository(r, name.Insecure); err == nil && mr.RegistryStr() == repo.RegistryStr() {
			mounts = append(mounts, mr)
		}
	}
	// The bytes held since the digest was recorded, never a path another
	// conversion could have replaced meanwhile.
	if err := c.reg.PushBlob(ctx, repo, desc, j.blob.Open, mounts...); err != nil {
		return fmt.Errorf("push layer blob %s: %w", desc.Digest, err)
	}
	c.obs.Bytes("pushed", j.entry.Blob.Size)
	return c.cache.AddRepo(j.entry, repo.String())
}

// publishShared stores in the shared cache the layers this worker built
// under a claim or in place of a stale value, naming repo, once the artifact
// manifest is pushed: until a manifest references a blob, a registry's
// garbage collection may delete it, and a conversion that fails before its
// manifest leaves its blobs unreferenced. A failure to store is logged, not
// returned: the artifact is pushed, a retry would find it and store nothing
// either, and workers waiting on the claim build the layer themselves once it
// is released.
func (c *Converter) publishShared(ctx context.Context, repo name.Repository, jobs []*layerJob) {
	for _, j := range jobs {
		key := j.claimKey()
		if key == "" {
			key = j.stale
		}
		if key == "" {
			continue
		}
		v, err := json.Marshal(sharedValue{Entry: j.entry, Repo: repo.String()})
		if err == nil {
			err = c.shared.Put(ctx, key, v)
		}
		if err != nil {
			c.log.Warn("could not store a built layer in the shared chain cache; other workers will build it too",
				zap.String("chainID", j.src.ChainID), zap.String("repo", repo.String()), zap.Error(err))
		}
	}
}
