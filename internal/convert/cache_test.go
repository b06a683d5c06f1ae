package convert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/artifact"
)

func TestCacheKeyedByChainAndParent(t *testing.T) {
	c, err := NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(t.TempDir(), "b")
	if err := os.WriteFile(blob, []byte("blobbytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := CacheEntry{ChainID: "sha256:child", ParentBlob: "sha256:parentA", PackedLayer: artifact.PackedLayer{Blob: artifact.BlobInfo{Digest: "sha256:b", Size: 9}}}
	b, err := c.Put(e, blob)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	tests := []struct {
		name, chain, parent string
		hit                 bool
	}{
		{"same chain, same parent build", "sha256:child", "sha256:parentA", true},
		{"same chain, other parent build", "sha256:child", "sha256:parentB", false},
		{"other chain", "sha256:other", "sha256:parentA", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, b, ok, err := c.Get(tt.chain, tt.parent)
			b.Close()
			if err != nil || ok != tt.hit {
				t.Fatalf("Get = %v, %v; want hit=%v", ok, err, tt.hit)
			}
		})
	}
	// A truncated blob is not trusted.
	if err := os.WriteFile(c.blobPath("sha256:child", "sha256:b"), []byte("blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := c.Get("sha256:child", "sha256:parentA"); ok {
		t.Fatal("entry with a truncated blob was a hit")
	}
}

func TestIsArtifactManifest(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want bool
	}{
		{"our artifact", `{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.cimconv.cim.v1+json","config":{"mediaType":"application/vnd.cimconv.cim.v1+json"}}`, true},
		{"our config type only", `{"config":{"mediaType":"application/vnd.cimconv.cim.v1+json"}}`, true},
		{"referrers index", `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"artifactType":"application/vnd.cimconv.cim.v1+json"},{"artifactType":"application/vnd.example.sig"}]}`, true},
		{"windows image", `{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json"}}`, false},
		{"image index", `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json"},{"artifactType":"application/vnd.example.sig"}]}`, false},
		{"garbage", `not json`, false},
	}
	for _, tt := range tests {
		if got := isArtifactManifest([]byte(tt.raw)); got != tt.want {
			t.Errorf("%s: isArtifactManifest = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestCacheConcurrentWriters: two caches on one directory (two processes)
// storing builds of one chainID at once never fail on each other's temp
// files, and a reader holding a Blob keeps reading the bytes of its digest
// while the entry is replaced.
func TestCacheConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	work := t.TempDir()
	put := func(c *Cache, content string) (*Blob, error) {
		f, err := os.CreateTemp(work, "blob-*")
		if err != nil {
			return nil, err
		}
		f.WriteString(content)
		f.Close()
		sum := sha256.Sum256([]byte(content))
		e := CacheEntry{ChainID: "sha256:shared", PackedLayer: artifact.PackedLayer{Blob: artifact.BlobInfo{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(content))}}}
		b, err := c.Put(e, f.Name())
		if err == nil {
			err = c.AddRepo(e, "example.test/repo")
		}
		return b, err
	}
	c1, _ := NewCache(dir)
	held, err := put(c1, "first build")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := 0; w < 2; w++ {
		c, _ := NewCache(dir) // its own lock, as another process has
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				b, err := put(c, fmt.Sprintf("build %d of writer %d", i, w))
				if err != nil {
					errs <- err
					return
				}
				b.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, _ := io.ReadAll(held.Reader()); string(got) != "first build" {
		t.Errorf("held blob reads %q after the entry was replaced", got)
	}
	e, b, ok, err := c1.Get("sha256:shared", "")
	if err != nil || !ok {
		t.Fatalf("Get after concurrent writers: ok=%v err=%v", ok, err)
	}
	defer b.Close()
	got, _ := io.ReadAll(b.Reader())
	if sum := sha256.Sum256(got); "sha256:"+hex.EncodeToString(sum[:]) != e.Blob.Digest {
		t.Errorf("cached blob does not match its entry's digest")
	}
	if len(e.Repos) != 1 {
		t.Errorf("repos %v", e.Repos)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*", ".tmp-*"))
	if len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}

	// Blobs of replaced builds go once they are old enough that no
	// concurrent Put can still be writing its entry.
	blobs, _ := filepath.Glob(filepath.Join(dir, "*", blobPrefix+"*"))
	if len(blobs) < 2 {
		t.Fatalf("blobs %v: expected the replaced builds to be kept while young", blobs)
	}
	old := time.Now().Add(-2 * staleAfter)
	for _, p := range blobs {
		os.Chtimes(p, old, old)
	}
	last, err := put(c1, "last build")
	if err != nil {
		t.Fatal(err)
	}
	last.Close()
	if blobs, _ := filepath.Glob(filepath.Join(dir, "*", blobPrefix+"*")); len(blobs) != 1 {
		t.Errorf("after a Put, blobs %v, want only the last build's", blobs)
	}
}
