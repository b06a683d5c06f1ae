package convert

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

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
	// Options is the options key of the converter that built the layer
	// (Converter.OptionsKey); empty in entries written before it was
	// recorded (see builtWith).
	Options string `json:"options,omitempty"`
}

// Cache is the local chain cache: one directory per chainID holding the
// entry and the packed layer blob, named after its digest. Writes are atomic
// (uniquely named temp file + rename), so a crash or a concurrent writer
// never leaves a half-written file that looks valid, and a blob's name is
// its content: a reader holding a Blob reads the bytes its digest names even
// when the entry is replaced meanwhile.
type Cache struct {
	dir string
	mu  sync.Mutex // entry read-modify-write within this process
}

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

func (c *Cache) entryPath(chainID string) string {
	return filepath.Join(c.entryDir(chainID), "entry.json")
}

const blobPrefix, blobSuffix = "blob-", ".tar.zst"

// blobPath is where the packed blob of chainID with digest lives.
func (c *Cache) blobPath(chainID, digest string) string {
	return filepath.Join(c.entryDir(chainID), blobPrefix+strings.TrimPrefix(digest, "sha256:")+blobSuffix)
}

// Blob is a cached layer blob held open: the exact bytes whose digest the
// entry records, whatever happens to the cache afterwards. Close it when
// done.
type Blob struct {
	f    *os.File
	size int64
}

// Reader reads the blob from its start; each call gives a new reader.
func (b *Blob) Reader() io.Reader { return io.NewSectionReader(b.f, 0, b.size) }

// Open is Reader as a registry.Client opener (which may read more than once).
func (b *Blob) Open() (io.ReadCloser, error) { return io.NopCloser(b.Reader()), nil }

// Close releases the blob.
func (b *Blob) Close() error {
	if b == nil {
		return nil
	}
	return b.f.Close()
}

func openBlob(path string, size int64) (*Blob, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && st.Size() != size {
		err = fmt.Errorf("chain cache blob %s: %d bytes, the entry says %d", path, st.Size(), size)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Blob{f: f, size: size}, nil
}

// Get returns the entry for chainID built on parentBlob ("" for a base
// layer) with its blob open, or ok=false when there is none, it was built on
// another parent, or its blob is missing or truncated.
func (c *Cache) Get(chainID, parentBlob string) (_ CacheEntry, _ *Blob, ok bool, _ error) {
	e, ok, err := c.readEntry(chainID)
	if err != nil || !ok || e.ParentBlob != parentBlob {
		return CacheEntry{}, nil, false, err
	}
	b, err := openBlob(c.blobPath(chainID, e.Blob.Digest), e.Blob.Size)
	if err != nil {
		return CacheEntry{}, nil, false, nil // not trusted: build again
	}
	return e, b, true, nil
}

func (c *Cache) readEntry(chainID string) (CacheEntry, bool, error) {
	b, err := os.ReadFile(c.entryPath(chainID))
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
	if e.ChainID != chainID {
		return CacheEntry{}, false, nil
	}
	return e, true, nil
}

// Put stores an entry whose blob is at blobPath (moved into the cache) and
// returns the stored blob open. Blobs of older builds of the chainID are
// removed (best effort: one still open elsewhere stays readable there).
func (c *Cache) Put(e CacheEntry, blobPath string) (*Blob, error) {
	if err := os.MkdirAll(c.entryDir(e.ChainID), 0o755); err != nil {
		return nil, err
	}
	dst := c.blobPath(e.ChainID, e.Blob.Digest)
	if err := os.Rename(blobPath, dst); err != nil {
		if st, serr := os.Stat(dst); serr == nil && st.Size() == e.Blob.Size {
			os.Remove(blobPath) // the same digest is there already
		} else if err := copyPath(blobPath, dst); err != nil {
			return nil, err
		}
	}
	b, err := openBlob(dst, e.Blob.Size)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	err = c.writeEntry(e)
	c.mu.Unlock()
	if err != nil {
		b.Close()
		return nil, err
	}
	c.removeStale(e)
	return b, nil
}

// staleAfter is how old a blob of a replaced build must be before Put
// removes it: a younger one may belong to a concurrent Put (another process
// on this cache) that has not written its entry yet. A later Put removes it.
const staleAfter = 10 * time.Minute

func (c *Cache) removeStale(e CacheEntry) {
	keep := filepath.Base(c.blobPath(e.ChainID, e.Blob.Digest))
	dir := c.entryDir(e.ChainID)
	ents, _ := os.ReadDir(dir)
	for _, d := range ents {
		n := d.Name()
		if n == keep || !strings.HasPrefix(n, blobPrefix) || !strings.HasSuffix(n, blobSuffix) {
			continue
		}
		if info, err := d.Info(); err == nil && time.Since(info.ModTime()) > staleAfter {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
}

// AddRepo records that the entry's blob now exists in repo. Nothing is
// recorded when the cache holds another build of the chainID by now.
func (c *Cache) AddRepo(e CacheEntry, repo string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok, err := c.readEntry(e.ChainID)
	if err != nil || !ok || cur.Blob.Digest != e.Blob.Digest {
		return err
	}
	if slices.Contains(cur.Repos, repo) {
		return nil
	}
	cur.Repos = append(cur.Repos, repo)
	return c.writeEntry(cur)
}

func (c *Cache) writeEntry(e CacheEntry) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(c.entryPath(e.ChainID), func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// writeAtomic writes dst through a uniquely named temp file beside it.
func writeAtomic(dst string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst)+"-*")
	if err != nil {
		return err
	}
	err = write(tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func copyPath(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomic(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
