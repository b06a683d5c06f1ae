package convert

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cimconv/cimconv/internal/artifact"
)

// CacheEntry is what the chain cache knows of one built layer: its packed blob
// and the exact parent blob it was forked from. A child is only valid on top of
// that exact parent build (CimFS does not write reproducible CIMs), so entries
// are keyed by chainID and checked against the parent blob digest.
type CacheEntry struct {
	ChainID    string `json:"chainID"`
	ParentBlob string `json:"parentBlob,omitempty"`
	// PackedLayer is the blob, the layer's config entry and its build,
	// stored flat (blob, layer, build) as the artifact lists them.
	artifact.PackedLayer
	Repos []string `json:"repos,omitempty"` // repositories the blob was pushed to
}

// Cache is the local chain cache: one directory per chainID holding the packed
// layer blob and its entry. Writes are atomic (temp file + rename), so a crash
// never leaves a half-written entry that looks valid.
type Cache struct{ dir string }

// NewCache opens (creating) a cache directory.
func NewCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chain cache %s: %w", dir, err)
	}
	return &Cache{dir: dir}, nil
}

func (c *Cache) entryDir(chainID string) string {
	return filepath.Join(c.dir, strings.TrimPrefix(chainID, "sha256:"))
}

// BlobPath is where the packed blob of chainID lives.
func (c *Cache) BlobPath(chainID string) string {
	return filepath.Join(c.entryDir(chainID), "blob.tar.zst")
}

// Get returns the entry for chainID built on parentBlob ("" for a base layer),
// or ok=false when there is none or it was built on another parent.
func (c *Cache) Get(chainID, parentBlob string) (CacheEntry, bool, error) {
	b, err := os.ReadFile(filepath.Join(c.entryDir(chainID), "entry.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return CacheEntry{}, false, nil
	}
	if err != nil {
		return CacheEntry{}, false, err
	}
	var e CacheEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return CacheEntry{}, false, fmt.Errorf("chain cache entry %s: %w", chainID, err)
	}
	if e.ChainID != chainID || e.ParentBlob != parentBlob {
		return CacheEntry{}, false, nil
	}
	st, err := os.Stat(c.BlobPath(chainID))
	if err != nil || st.Size() != e.Blob.Size {
		return CacheEntry{}, false, nil
	}
	return e, true, nil
}

// Put stores an entry whose blob is at blobPath (moved into the cache).
func (c *Cache) Put(e CacheEntry, blobPath string) error {
	dir := c.entryDir(e.ChainID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Rename(blobPath, c.BlobPath(e.ChainID)); err != nil {
		if err := copyPath(blobPath, c.BlobPath(e.ChainID)); err != nil {
			return err
		}
	}
	return c.writeEntry(e)
}

// AddRepo records that the entry's blob now exists in repo.
func (c *Cache) AddRepo(e CacheEntry, repo string) error {
	for _, r := range e.Repos {
		if r == repo {
			return nil
		}
	}
	e.Repos = append(e.Repos, repo)
	return c.writeEntry(e)
}

func (c *Cache) writeEntry(e CacheEntry) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.entryDir(e.ChainID), "entry.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.entryDir(e.ChainID), "entry.json"))
}

func copyPath(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
