package convert

import (
	"context"
	"fmt"
	"sync"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/version"
)

// layerJob is one layer of a chain on its way to the artifact.
type layerJob struct {
	src     builder.LayerSource
	entry   CacheEntry
	cached  bool
	built   *builder.BuiltLayer
	packed  chan struct{} // closed when entry is final (packed and cached)
	packErr error
	// blob is the entry's blob in the cache, held open from the moment the
	// entry is known: materialize, push and --output read these bytes.
	blob *Blob
	// release gives up this conversion's in-process claim on building the
	// layer (nil when it holds none); safe to call more than once.
	release func()
	// claim is the shared-cache key this worker claimed to build the layer
	// ("" when none); it is Put once the artifact manifest referencing the
	// blob is pushed, else released. Written before the renewal goroutine
	// reads it (claimMu).
	claim   string
	claimMu sync.Mutex
	// stale is the shared-cache key whose value named a blob that is gone
	// ("" when none): the layer is built without a claim (the value stands
	// in the way of one) and its value replaces the stale one.
	stale string
}

// done closes the job's blob and releases its in-process build claim.
func (j *layerJob) done() {
	if j.release != nil {
		j.release()
	}
	j.blob.Close()
}

// plan turns the image's layers into jobs with diffIDs and chainIDs.
func plan(t registry.Target) ([]*layerJob, error) {
	if len(t.Layers) == 0 {
		return nil, fmt.Errorf("image %s has no layers", t.Ref)
	}
	var jobs []*layerJob
	chain := ""
	for _, l := range t.Layers {
		if l.DiffID.Hex == "" {
			return nil, fmt.Errorf("image %s: layer %s has no diffID in the config", t.Ref, l.Digest)
		}
		chain = builder.ChainID(chain, l.DiffID.String())
		jobs = append(jobs, &layerJob{
			src: builder.LayerSource{
				Digest: l.Digest.String(), DiffID: l.DiffID.String(), ChainID: chain,
				MediaType: string(l.MediaType), Size: l.Size,
			},
			packed: make(chan struct{}),
		})
	}
	return jobs, nil
}

// existing finds an artifact for t built with the same format and options,
// holding no hive merge this converter's builder does not do (its manifest
// names the merge when any layer's hives were merged): what this converter
// would build, as the chain cache decides for each layer (reusable).
func (c *Converter) existing(ctx context.Context, t registry.Target, optsKey string) (string, bool, error) {
	descs, err := c.reg.Referrers(ctx, t.Ref, artifact.ArtifactType)
	if err != nil {
		return "", false, fmt.Errorf("look up existing artifacts: %w", err)
	}
	caps := c.b.Capabilities()
	for _, d := range descs {
		a := d.Annotations
		if a[artifact.AnnotationFormatVersion] == version.FormatVersion && a[artifact.AnnotationOptions] == optsKey &&
			acceptsHiveMerge(caps, a[artifact.AnnotationHiveMerge]) {
			if ok, err := c.signedBySelf(ctx, t, d); err != nil || !ok {
				if err != nil {
					return "", false, err
				}
				continue // not signed by this worker's key: rebuild and sign
			}
			return d.Digest.String(), true, nil
		}
	}
	return "", false, nil
}
