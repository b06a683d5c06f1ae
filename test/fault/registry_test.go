//go:build fault && linux

package fault

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// throttle limits the bandwidth of blob downloads (GET .../blobs/...) of a
// registry to rate bytes/s shared by all requests, as a slow link to a
// registry would, and counts the blob bytes served per repository.
type throttle struct {
	mu     sync.Mutex
	rate   float64 // bytes per second; 0: unlimited
	next   time.Time
	served map[string]int64
}

func newThrottle(rate float64) *throttle {
	return &throttle{rate: rate, served: map[string]int64{}}
}

func (th *throttle) setRate(rate float64) {
	th.mu.Lock()
	th.rate = rate
	th.mu.Unlock()
}

// servedFor is the number of blob bytes sent for repository repo.
func (th *throttle) servedFor(repo string) int64 {
	th.mu.Lock()
	defer th.mu.Unlock()
	return th.served[repo]
}

// wait reserves n bytes of the shared budget and sleeps until they may go.
func (th *throttle) wait(ctx context.Context, repo string, n int) {
	th.mu.Lock()
	th.served[repo] += int64(n)
	if th.rate <= 0 {
		th.mu.Unlock()
		return
	}
	now := time.Now()
	if th.next.Before(now) {
		th.next = now
	}
	th.next = th.next.Add(time.Duration(float64(n) / th.rate * float64(time.Second)))
	until := th.next
	th.mu.Unlock()
	select {
	case <-time.After(time.Until(until)):
	case <-ctx.Done():
	}
}

func (th *throttle) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo, _, isBlob := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")
		if r.Method != http.MethodGet || !isBlob {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&slowWriter{ResponseWriter: w, th: th, repo: repo, ctx: r.Context()}, r)
	})
}

type slowWriter struct {
	http.ResponseWriter
	th   *throttle
	repo string
	ctx  context.Context
}

func (s *slowWriter) Write(p []byte) (int, error) {
	const chunk = 16 << 10
	written := 0
	for len(p) > 0 {
		n := min(chunk, len(p))
		s.th.wait(s.ctx, s.repo, n)
		m, err := s.ResponseWriter.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[n:]
	}
	return written, nil
}

// image is a generated Windows image pushed to the test registry.
type image struct {
	repo   string // host/path
	tag    string // host/path:tag
	digest string // host/path@sha256:...
	bytes  int64  // stored size of its layers
}

var winPlatform = v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"}

// pushImage pushes BaseLayer + AppLayer(n) (gzip) as host/fault/NAME:v1.
func pushImage(t *testing.T, host, nameStr string, n int) image {
	t.Helper()
	layers := [][]byte{fixture.BaseLayer().Bytes(fixture.Gzip), fixture.AppLayer(n).Bytes(fixture.Gzip)}
	return pushLayers(t, host, nameStr, layers, winPlatform)
}

func pushLayers(t *testing.T, host, nameStr string, layers [][]byte, p v1.Platform) image {
	t.Helper()
	repo := host + "/fault/" + nameStr
	desc := registrytest.PushImage(t, repo+":v1", layers, p)
	im := image{repo: repo, tag: repo + ":v1", digest: repo + "@" + desc.Digest.String()}
	for _, l := range layers {
		im.bytes += int64(len(l))
	}
	return im
}

// path is the repository path of im without the host (as the throttle
// counts it).
func (im image) path() string {
	_, p, _ := strings.Cut(im.repo, "/")
	return p
}

// artifacts lists the cimconv artifacts whose subject is im (referrers
// API, or the fallback tag on a registry without it).
func artifacts(ctx context.Context, t *testing.T, im image) ([]string, error) {
	t.Helper()
	c, err := registry.New()
	if err != nil {
		return nil, err
	}
	d, err := name.NewDigest(im.digest, name.Insecure)
	if err != nil {
		return nil, err
	}
	descs, err := c.Referrers(ctx, d, artifact.ArtifactType)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", im.digest, err)
	}
	var out []string
	for _, d := range descs {
		out = append(out, d.Digest.String())
	}
	return out, nil
}
