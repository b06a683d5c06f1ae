package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/zap"
)

// maxManifestSize bounds manifest and config reads (the distribution spec
// suggests registries accept at least 4 MiB manifests).
const maxManifestSize = 4 << 20

var manifestAccept = strings.Join([]string{
	string(types.OCIImageIndex), string(types.DockerManifestList),
	string(types.OCIManifestSchema1), string(types.DockerManifestSchema2),
}, ",")

// Target is one platform-specific Windows image manifest to convert.
type Target struct {
	Ref        name.Digest   // repo@digest of the manifest (the artifact's subject)
	Descriptor v1.Descriptor // mediaType, digest, size (+platform)
	Platform   v1.Platform   // os, architecture, os.version
	Manifest   *v1.Manifest
	Config     *v1.ConfigFile
	Layers     []Layer
}

// Layer is one layer of a Target, as listed in its manifest, with the diffID
// from the config at the same position.
type Layer struct {
	Digest    v1.Hash
	DiffID    v1.Hash
	MediaType types.MediaType
	Size      int64
	URLs      []string
	Foreign   bool // non-distributable: fetched from URLs, not the registry
}

// Resolve turns a tag or digest reference into the Windows manifests to
// convert. An index yields every windows/<arch> manifest that policy
// matches (attestation and unknown-platform entries skipped); a plain
// manifest yields itself when its config says Windows. platform.OS defaults
// to windows and platform.Architecture to amd64; a non-windows OS is refused.
func (c *Client) Resolve(ctx context.Context, ref string, platform v1.Platform, policy OSVersionPolicy) ([]Target, error) {
	r, err := c.parseReference(ref)
	if err != nil {
		return nil, &Error{Op: "resolve", Ref: ref, Err: err}
	}
	if platform.OS == "" {
		platform.OS = "windows"
	}
	if platform.Architecture == "" {
		platform.Architecture = "amd64"
	}
	if platform.OS != "windows" {
		return nil, &Error{Op: "resolve", Ref: ref, Err: fmt.Errorf("%w: platform %s requested; only windows images are converted", ErrNotWindows, platform.OS)}
	}
	hc, err := c.httpClient(ctx, r.Context(), transport.PullScope)
	if err != nil {
		return nil, wrapErr("resolve", ref, err)
	}
	raw, desc, err := c.getManifest(ctx, hc, r)
	if err != nil {
		return nil, wrapErr("resolve", ref, err)
	}
	repo := r.Context()
	switch desc.MediaType {
	case types.OCIImageIndex, types.DockerManifestList:
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, &Error{Op: "resolve", Ref: ref, Err: fmt.Errorf("index %s: %w", desc.Digest, err)}
		}
		var picked []v1.Descriptor
		var windows, seen []string
		for _, m := range idx.Manifests {
			if isAttestation(m) || m.Platform == nil || m.Platform.OS == "" || m.Platform.OS == "unknown" {
				continue
			}
			seen = append(seen, platformString(*m.Platform))
			if m.Platform.OS != "windows" {
				continue
			}
			windows = append(windows, platformString(*m.Platform))
			if m.Platform.Architecture != platform.Architecture ||
				(platform.Variant != "" && m.Platform.Variant != platform.Variant) ||
				!policy.Match(m.Platform.OSVersion) {
				continue
			}
			if !m.MediaType.IsImage() || slices.ContainsFunc(picked, func(d v1.Descriptor) bool { return d.Digest == m.Digest }) {
				continue
			}
			picked = append(picked, m)
		}
		if len(windows) == 0 {
			return nil, &Error{Op: "resolve", Ref: ref, Err: fmt.Errorf("%w: index has no windows manifests (platforms: %s)", ErrNotWindows, listOrNone(seen))}
		}
		if len(picked) == 0 {
			return nil, &Error{Op: "resolve", Ref: ref, Err: fmt.Errorf("%w: want windows/%s os.version %s; index has %s", ErrNoMatch, platform.Architecture, policy, listOrNone(windows))}
		}
		targets := make([]Target, 0, len(picked))
		for _, m := range picked {
			d := repo.Digest(m.Digest.String())
			mraw, mdesc, err := c.getManifest(ctx, hc, d)
			if err != nil {
				return nil, wrapErr("resolve", d.String(), err)
			}
			if mdesc.MediaType != m.MediaType {
				c.log.Debug("manifest media type differs from index entry", zap.String("image", d.String()), zap.String("index", string(m.MediaType)), zap.String("manifest", string(mdesc.MediaType)))
			}
			t, err := c.target(ctx, hc, d, mraw, m)
			if err != nil {
				return nil, err
			}
			targets = append(targets, *t)
		}
		return targets, nil
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		d := repo.Digest(desc.Digest.String())
		t, err := c.target(ctx, hc, d, raw, desc)
		if err != nil {
			return nil, err
		}
		if t.Platform.OS != "windows" {
			return nil, &Error{Op: "resolve", Ref: ref, Err: fmt.Errorf("%w: image config says os %q", ErrNotWindows, t.Platform.OS)}
		}
		if t.Platform.Architecture != platform.Architecture || !policy.Match(t.Platform.OSVersion) {
			return nil, &Error{Op: "resolve", Ref: ref, Err: fmt.Errorf("%w: want windows/%s os.version %s; image is %s", ErrNoMatch, platform.Architecture, policy, platformString(t.Platform))}
		}
		return []Target{*t}, nil
	default:
		return nil, &Error{Op: "resolve", Ref: ref, Err: fmt.Errorf("unsupported manifest media type %q", desc.MediaType)}
	}
}

// target reads the config of one image manifest and pairs its layers with
// the config's diff_ids.
func (c *Client) target(ctx context.Context, hc *http.Client, d name.Digest, raw []byte, desc v1.Descriptor) (*Target, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, &Error{Op: "resolve", Ref: d.String(), Err: fmt.Errorf("manifest: %w", err)}
	}
	cfgRaw, err := c.readBlob(ctx, hc, d.Context(), m.Config, maxManifestSize)
	if err != nil {
		return nil, wrapErr("resolve", d.String(), fmt.Errorf("config %s: %w", m.Config.Digest, err))
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cfgRaw))
	if err != nil {
		return nil, &Error{Op: "resolve", Ref: d.String(), Err: fmt.Errorf("config %s: %w", m.Config.Digest, err)}
	}
	if cfg.OS != "windows" {
		return nil, &Error{Op: "resolve", Ref: d.String(), Err: fmt.Errorf("%w: image config says os %q", ErrNotWindows, cfg.OS)}
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, &Error{Op: "resolve", Ref: d.String(), Err: fmt.Errorf("manifest has %d layers but config has %d diff_ids", len(m.Layers), len(cfg.RootFS.DiffIDs))}
	}
	p := cfg.Platform()
	if p == nil {
		p = &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture}
	}
	if desc.Platform != nil && p.OSVersion == "" {
		p.OSVersion = desc.Platform.OSVersion
	}
	desc = v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size, Platform: p}
	t := &Target{Ref: d, Descriptor: desc, Platform: *p, Manifest: m, Config: cfg}
	for i, l := range m.Layers {
		t.Layers = append(t.Layers, Layer{
			Digest: l.Digest, DiffID: cfg.RootFS.DiffIDs[i], MediaType: l.MediaType,
			Size: l.Size, URLs: l.URLs, Foreign: !l.MediaType.IsDistributable(),
		})
	}
	return t, nil
}

// FetchManifest returns a manifest's bytes and descriptor after checking
// they hash to ref's digest.
func (c *Client) FetchManifest(ctx context.Context, ref name.Digest) ([]byte, v1.Descriptor, error) {
	hc, err := c.httpClient(ctx, ref.Context(), transport.PullScope)
	if err != nil {
		return nil, v1.Descriptor{}, wrapErr("fetch manifest", ref.String(), err)
	}
	raw, desc, err := c.getManifest(ctx, hc, ref)
	if err != nil {
		return nil, v1.Descriptor{}, wrapErr("fetch manifest", ref.String(), err)
	}
	return raw, desc, nil
}

// getManifest GETs a manifest by tag or digest; by digest the bytes are
// verified. The media type comes from the body's mediaType field when set
// (it is what the digest covers), else from Content-Type.
func (c *Client) getManifest(ctx context.Context, hc *http.Client, r name.Reference) ([]byte, v1.Descriptor, error) {
	repo := c.repoFor(r.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, registryURL(repo, "manifests/"+r.Identifier()), nil)
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := do(hc, req, http.StatusOK)
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	if len(raw) > maxManifestSize {
		return nil, v1.Descriptor{}, fmt.Errorf("manifest larger than %d bytes", maxManifestSize)
	}
	h, n, _ := v1.SHA256(bytes.NewReader(raw))
	if d, ok := r.(name.Digest); ok && d.DigestStr() != h.String() {
		return nil, v1.Descriptor{}, fmt.Errorf("%w: manifest %s: registry served bytes hashing to %s", ErrDigestMismatch, d.DigestStr(), h)
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	_ = json.Unmarshal(raw, &probe)
	mt := probe.MediaType
	if mt == "" {
		mt = types.MediaType(strings.TrimSpace(strings.Split(resp.Header.Get("Content-Type"), ";")[0]))
	}
	return raw, v1.Descriptor{MediaType: mt, Digest: h, Size: n}, nil
}

func isAttestation(d v1.Descriptor) bool {
	return d.Annotations["vnd.docker.reference.type"] == "attestation-manifest"
}

// PlatformString names a platform "os/arch" or "os/arch/variant" (without
// the os.version).
func PlatformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// platformString is PlatformString and the os.version, for messages.
func platformString(p v1.Platform) string {
	if p.OSVersion != "" {
		return PlatformString(p) + " " + p.OSVersion
	}
	return PlatformString(p)
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
