package convert

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cimconv/cimconv/internal/artifact"
)

// pack writes the layer's blob into the cache.
func (c *Converter) pack(ctx context.Context, j, prev *layerJob) (err error) {
	start := time.Now()
	defer func() { c.obs.Stage(StagePack, time.Since(start), err) }()
	parentBlob := ""
	if prev != nil {
		<-prev.packed
		if prev.packErr != nil {
			return fmt.Errorf("parent layer failed: %w", prev.packErr)
		}
		parentBlob = prev.entry.Blob.Digest
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	b := j.built
	tmp, err := os.CreateTemp(c.workDirOrTemp(), "blob-*.tar.zst")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	info, err := artifact.Pack(tmp, b.CimDir, b.CimFiles, b.SideDir, b.SideFiles)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	j.entry = CacheEntry{
		ChainID:     j.src.ChainID,
		ParentBlob:  parentBlob,
		PackedLayer: packedLayer(j.src, b, info),
		Options:     c.OptionsKey(),
	}
	j.blob, err = c.cache.Put(j.entry, tmp.Name())
	return err
}
