package devenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// SampleOSVersion is the os.version of the generated sample image.
const SampleOSVersion = "10.0.20348.2031"

// Registry is a loopback registry with the referrers API.
type Registry struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// StartRegistry serves go-containerregistry's registry on addr (use
// "127.0.0.1:0" for a free port). Blobs live in memory, or under dir when
// dir is not empty.
func StartRegistry(addr, dir string) (*Registry, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dev registry: listen %s: %w", addr, err)
	}
	opts := []ggcrregistry.Option{ggcrregistry.WithReferrersSupport(true), ggcrregistry.Logger(log.New(io.Discard, "", 0))}
	if dir != "" {
		opts = append(opts, ggcrregistry.WithBlobHandler(ggcrregistry.NewDiskBlobHandler(dir)))
	}
	r := &Registry{
		srv:  &http.Server{Handler: ggcrregistry.New(opts...), ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

// Host is "127.0.0.1:port".
func (r *Registry) Host() string { return r.ln.Addr().String() }

// Close stops the registry.
func (r *Registry) Close(ctx context.Context) error {
	err := r.srv.Shutdown(ctx)
	if serr := <-r.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// PushSample pushes a generated 3-layer Windows image (base layer with
// registry hives, two app layers with whiteouts and links) to ref and
// returns its digest reference.
func PushSample(ctx context.Context, ref string) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("sample image %q: %w", ref, err)
	}
	var layers [][]byte
	for _, l := range fixture.Chain(3) {
		layers = append(layers, l.Bytes(fixture.Gzip))
	}
	img, err := WindowsImage(layers, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: SampleOSVersion})
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push sample image %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return r.Context().Digest(d.String()).String(), nil
}

// WindowsImage builds an OCI image of the given layers (as stored:
// gzip-compressed) for platform p.
func WindowsImage(layers [][]byte, p v1.Platform) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i, b := range layers {
		b := b
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, fmt.Errorf("sample layer %d: %w", i, err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.OSVersion = p.OS, p.Architecture, p.OSVersion
	cf.Created = v1.Time{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return mutate.ConfigFile(img, cf)
}
