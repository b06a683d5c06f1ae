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
	if err := c.sign(ctx, repo, d, manifest, cfgBytes); err != nil {
		return "", err
	}
	c.obs.Bytes("pushed", int64(len(manifest)+len(cfgBytes)))
	return d.String(), nil
}

// pushLayer uploads one layer blob (mounting it from another repository of
// the registry that has it), records the repository in the cache and, when
// this worker claimed the layer or built it in place of a stale value,
// publishes it in the shared cache.
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
	if err := c.cache.AddRepo(j.entry, repo.String()); err != nil {
		return err
	}
	key := j.claimKey()
	if key == "" {
		key = j.stale
	}
	if key != "" {
		// The blob is in a registry now: other workers may take it.
		v, err := json.Marshal(sharedValue{Entry: j.entry, Repo: repo.String()})
		if err != nil {
			return err
		}
		if err := c.shared.Put(ctx, key, v); err != nil {
			return fmt.Errorf("shared chain cache %s: %w", j.src.ChainID, err)
		}
	}
	return nil
}
