package convert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
)

// SharedCache is the chain cache shared by every worker (the cimconv-chains
// NATS KV bucket in the service). Keys are opaque "sha256:<hex>" strings
// derived from the converter's options key and the chainID.
type SharedCache interface {
	// Acquire returns the value stored for key (won=false), waiting while
	// another worker holds the build claim; or claims key for this worker
	// (won=true), which must then Put and Release.
	Acquire(ctx context.Context, key string) (value []byte, won bool, err error)
	// Put stores the value of key.
	Put(ctx context.Context, key string, value []byte) error
	// Release gives up this worker's claim on key.
	Release(ctx context.Context, key string) error
	// Renew extends this worker's claim on key while it is still building;
	// it reports false when the claim was lost (expired and taken over).
	Renew(ctx context.Context, key string) (bool, error)
}

// WithSharedCache makes workers consult and fill a shared chain cache: a
// layer another worker built is fetched from the registry instead of being
// built again, and two workers never build one chainID at once.
// A nil s leaves the converter on its local cache only.
func WithSharedCache(s SharedCache) Option { return func(c *Converter) { c.shared = s } }

// WithClaimRenewal sets how often build claims are renewed (default 5m).
func WithClaimRenewal(every time.Duration) Option {
	return func(c *Converter) {
		if every > 0 {
			c.renewEvery = every
		}
	}
}

// sharedValue is what the shared cache stores for a built layer: the cache
// entry and a repository holding its blob.
type sharedValue struct {
	Entry CacheEntry `json:"entry"`
	Repo  string     `json:"repo"`
}

// sharedKey scopes a chainID to an options key (optionsKey): workers whose
// builds differ (builder, CIM format, Windows build, block options) neither
// adopt each other's layers nor wait for each other's claims or overwrite
// each other's values. Keys until the options key was part of them hashed
// the builder's name alone; their values are never looked up again.
func sharedKey(optsKey, chainID string) string {
	sum := sha256.Sum256([]byte(optsKey + " " + chainID))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// errStaleValue: a shared value names a blob its registry does not have (404):
// the repository was deleted, or the blob garbage-collected.
var errStaleValue = errors.New("shared chain cache value names a blob that is gone")

// adoptShared takes a layer another worker built: it checks the value fits
// this chain and this converter's builder (reusable) and fetches the blob
// into the local cache. A blob the registry does not have is errStaleValue.
func (c *Converter) adoptShared(ctx context.Context, raw []byte, chainID, parentBlob string) (CacheEntry, *Blob, bool, error) {
	var v sharedValue
	if err := json.Unmarshal(raw, &v); err != nil {
		return CacheEntry{}, nil, false, nil // not ours to trust: build instead
	}
	e := v.Entry
	if e.ChainID != chainID || e.ParentBlob != parentBlob || !c.reusable(e) {
		return CacheEntry{}, nil, false, nil
	}
	repo, err := name.NewRepository(v.Repo, name.Insecure)
	if err != nil {
		return CacheEntry{}, nil, false, nil
	}
	h, err := v1.NewHash(e.Blob.Digest)
	if err != nil {
		return CacheEntry{}, nil, false, nil
	}
	rc, err := c.reg.FetchBlob(ctx, repo, v1.Descriptor{MediaType: types.MediaType(artifact.LayerMediaType), Digest: h, Size: e.Blob.Size})
	if errors.Is(err, registry.ErrNotFound) {
		return CacheEntry{}, nil, false, fmt.Errorf("%w: layer %s, blob %s in %s: %w", errStaleValue, chainID, h, repo, err)
	}
	if err != nil {
		return CacheEntry{}, nil, false, fmt.Errorf("fetch shared layer %s from %s: %w", chainID, repo, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(c.workDirOrTemp(), "shared-*.tar.zst")
	if err != nil {
		return CacheEntry{}, nil, false, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = rc.Close() // verifies the digest
	}
	if err != nil {
		return CacheEntry{}, nil, false, fmt.Errorf("fetch shared layer %s: %w", chainID, err)
	}
	c.obs.Bytes("fetched", n)
	e.Repos = []string{repo.String()}
	b, err := c.cache.Put(e, tmp.Name())
	if err != nil {
		return CacheEntry{}, nil, false, err
	}
	return e, b, true, nil
}
