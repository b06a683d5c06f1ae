package convert

import (
	"context"
	"fmt"

	"github.com/cimconv/cimconv/internal/builder"
)

// reuse looks for j's layer built on parentBlob: in the local cache, after
// waiting for a conversion of this process that is building it, then in the
// shared cache. It sets j.entry and j.blob when found. When it is not found,
// j holds the in-process claim on building the layer (j.release), and the
// shared cache's claim when there is one.
func (c *Converter) reuse(ctx context.Context, j *layerJob, parentBlob string) (bool, error) {
	key := c.chainKey(j.src.ChainID)
	for {
		if ok, err := c.fromCache(j, parentBlob); err != nil || ok {
			return ok, err
		}
		release, wait, won := c.flights.claim(key)
		if won {
			j.release = release
			break
		}
		select {
		case <-wait: // built (or given up): look again
		case <-ctx.Done():
			return false, context.Cause(ctx)
		}
	}
	// Cached between the look and the claim?
	if ok, err := c.fromCache(j, parentBlob); err != nil || ok {
		j.release()
		return ok, err
	}
	if c.shared == nil {
		return false, nil
	}
	e, b, ok, err := c.fromShared(ctx, j, parentBlob)
	if ok {
		j.entry, j.blob = e, b
		j.release()
	}
	return ok, err
}

// fromCache takes j's layer from the local cache when it is what this
// converter's builder would write (reusable).
func (c *Converter) fromCache(j *layerJob, parentBlob string) (bool, error) {
	e, b, ok, err := c.cache.Get(j.src.ChainID, parentBlob)
	if err != nil || !ok {
		return false, err
	}
	if !c.reusable(e) {
		b.Close()
		return false, nil
	}
	j.entry, j.blob = e, b
	return true, nil
}

// optionsKey names what a layer's bytes depend on besides its chain and the
// exact parent build it sits on (which the cache checks by blob digest): the
// builder, the CIM format (a forked CIM cannot sit on a block parent, nor
// the reverse), the Windows build the builder writes on (CimFS differs
// between builds and revisions: 20348 forks CIMs only from revision 2031;
// one chain's CIMs all come from one build, the one its artifact names) and
// the block CIM options. Unset fields are left out, so a key written before
// a field existed still names what it provably is: a portable forked
// artifact's "builder=portable,format=forked" is the same now. The hive
// merge is not part of it: see reusable.
func optionsKey(caps builder.Capabilities) string {
	k := fmt.Sprintf("builder=%s,format=%s", caps.Name, caps.Format)
	if caps.WindowsBuild != "" {
		k += ",windows-build=" + caps.WindowsBuild
	}
	if caps.Integrity {
		k += ",integrity"
	}
	if caps.VHDFooter {
		k += ",vhd-footer"
	}
	return k
}

// chainKey names a layer of this converter's builder in the shared cache and
// in this process's build flights.
func (c *Converter) chainKey(chainID string) string { return sharedKey(c.OptionsKey(), chainID) }

// builtWith returns the options key e was built with: recorded since entries
// carry it; for an older entry, what its build provably is. A forked CIM
// takes no block options, so its builder, format and Windows build name it;
// an older block entry may have had a VHD footer, which nothing recorded, so
// it names nothing ("") and is never reused.
func (e CacheEntry) builtWith() string {
	if e.Options != "" {
		return e.Options
	}
	if e.Build.Format != builder.FormatForked {
		return ""
	}
	return optionsKey(builder.Capabilities{Name: e.Build.Builder, Format: e.Build.Format, WindowsBuild: e.Build.WindowsBuild})
}

// reusable reports whether e, a layer this or another worker built, is what
// this converter's builder would write for its chain: built with the same
// options key, and holding no hive merge this builder does not do.
//
// The hive merge is checked on the layer instead of being keyed: a layer
// without delta hives comes out byte for byte the same under
// --hive-merge=portable and refuse, so a refusing worker reuses it (cheaply,
// on the same key and claims as merging workers), while a layer whose deltas
// the pure-Go merge merged says so (BuildInfo.HiveMerge, recorded since that
// merge exists, so an older entry without it provably holds none) and is
// never reused by a worker that refuses the merge. A child carries its
// parent's merged hives forward without recording a merge of its own; that
// is safe because reuse takes only a prefix of the chain, each layer on the
// exact parent blob: a refusing worker stops at the merged parent and builds
// it, which fails with portable.ErrDeltaHives.
func (c *Converter) reusable(e CacheEntry) bool {
	caps := c.b.Capabilities()
	return e.builtWith() == optionsKey(caps) && acceptsHiveMerge(caps, e.Build.HiveMerge)
}

// acceptsHiveMerge reports whether a layer or artifact whose hives were
// merged by merge ("" when none was, or offreg did) may be part of what the
// builder publishes.
func acceptsHiveMerge(caps builder.Capabilities, merge string) bool {
	return merge == "" || merge == caps.HiveMergeName
}

// claimRest claims, without waiting, the layers built after the first one
// that was not reused, so that another conversion of this process sharing
// them waits for these builds instead of repeating them. A layer another
// conversion holds already is built anyway (its parent is this conversion's
// own build, which that one cannot reuse).
func (c *Converter) claimRest(jobs []*layerJob) {
	for _, j := range jobs {
		if release, _, won := c.flights.claim(c.chainKey(j.src.ChainID)); won {
			j.release = release
		}
	}
}
