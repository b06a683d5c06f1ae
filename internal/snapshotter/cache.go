package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
)

// The layer cache under ROOT/cimconv/cache/<chainID hex>/: entry.json, cim/
// (the layer's .cim, region and objectid files) and side/ (its side files),
// written by Warm after every check the fast path makes. Prepare places a
// cached layer without the registry and removes the entry (the files move
// into the snapshot).
const entryFile = "entry.json"

type cacheEntry struct {
	ChainID         string               `json:"chainID"`
	ParentChainID   string               `json:"parentChainID,omitempty"`
	ParentRegionSet string               `json:"parentRegionSet,omitempty"`
	Subject         string               `json:"subject"`
	Provenance      provenance           `json:"provenance"`
	Layer           artifact.LayerConfig `json:"layer"`
	Trust           *trust.Result        `json:"trust,omitempty"`
	dir             string
}

func (e *cacheEntry) provenance() provenance { return e.Provenance }

// cacheUsable makes for a cache entry the checks the registry path makes
// for an artifact, against this resolver's policy now: `converter fetch
// --root` records what its verifier established (Trust) and what the CIMs
// are (Provenance), but may have run under another policy than the
// snapshotter's (--trust-unsigned, other keys, another node build or CIM
// format). The entry must satisfy the verifier (trust.CheckRecorded: an
// unsigned verdict only under --trust-unsigned, a signed one only by a key
// trusted now) and be usable on this node.
func (s *resolver) cacheUsable(e *cacheEntry) error {
	if err := trust.CheckRecorded(s.verifier, e.Trust); err != nil {
		return &fallThrough{reason: ReasonUntrusted, err: fmt.Errorf("cached layer %s (artifact %s): %w", e.ChainID, e.Provenance.Artifact, err)}
	}
	switch {
	case !slices.Contains(s.formats, e.Provenance.Format):
		return fall(ReasonIncompatible, "cached layer %s holds %q CIMs, this snapshotter uses %v", e.ChainID, e.Provenance.Format, s.formats)
	case !artifact.Compatible(e.Provenance.WindowsBuild, s.nodeBuild):
		return fall(ReasonIncompatible, "cached layer %s was built for Windows %s, node is %s", e.ChainID, e.Provenance.WindowsBuild, s.nodeBuild)
	case RegionSet(e.Layer) == "":
		return fall(ReasonIncompatible, "cached layer %s has no region files", e.ChainID)
	}
	return nil
}

func loadCacheEntry(root, chainID string) (*cacheEntry, bool) {
	dir := filepath.Join(cacheDir(root), chainHex(chainID))
	b, err := os.ReadFile(filepath.Join(dir, entryFile))
	if err != nil {
		return nil, false
	}
	var e cacheEntry
	if json.Unmarshal(b, &e) != nil || e.ChainID != chainID {
		return nil, false
	}
	e.dir = dir
	return &e, true
}

// WarmOptions says what to warm.
type WarmOptions struct {
	// Root is the snapshotter's --root.
	Root string
	// NodeBuild is the node's Windows build; empty accepts any.
	NodeBuild string
	// Platform selects the image manifest (default windows/amd64).
	Platform v1.Platform
	// Verifier decides whether the artifact may be used (required).
	Verifier trust.Verifier
	// Formats are the CIM formats the snapshotter uses (default forked).
	Formats []string
}

// WarmResult says what Warm cached.
type WarmResult struct {
	Subject  string   `json:"subject"`
	Artifact string   `json:"artifact"`
	Cached   []string `json:"cached"`  // chainIDs now in the cache
	Present  []string `json:"present"` // chainIDs that were already cached
}

// Warm fetches the image's artifact into the snapshotter's layer cache, with
// the same checks as the fast path, so a later pull places every layer
// without the registry. The snapshotter need not run.
func Warm(ctx context.Context, reg *registry.Client, image string, opt WarmOptions) (*WarmResult, error) {
	if opt.Root == "" {
		return nil, errors.New("warm: no snapshotter root")
	}
	if opt.Verifier == nil {
		return nil, fmt.Errorf("warm %s: %w: no verifier (use --trust-unsigned to accept unsigned artifacts)", image, trust.ErrUntrusted)
	}
	if opt.Platform.OS == "" {
		opt.Platform = v1.Platform{OS: "windows", Architecture: "amd64"}
	}
	if len(opt.Formats) == 0 {
		opt.Formats = []string{"forked"}
	}
	policy := registry.OSVersionPolicy{Mode: "all"}
	if opt.NodeBuild != "" {
		p, err := registry.ParseOSVersionPolicy("compatible:" + opt.NodeBuild)
		if err != nil {
			return nil, fmt.Errorf("node build %q: %w", opt.NodeBuild, err)
		}
		policy = p
	}
	targets, err := reg.Resolve(ctx, image, opt.Platform, policy)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", image, err)
	}
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].Platform.OSVersion > targets[j].Platform.OSVersion })
	t := targets[0]
	rv := &resolver{reg: reg, verifier: opt.Verifier, nodeBuild: opt.NodeBuild, formats: opt.Formats}
	r, err := rv.resolveIn(ctx, t.Ref.Context(), t.Descriptor.Digest.String())
	if err != nil {
		return nil, fmt.Errorf("warm %s: %w", image, err)
	}
	if err := os.MkdirAll(stagingDir(opt.Root), 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cacheDir(opt.Root), 0o700); err != nil {
		return nil, err
	}
	s := &Snapshotter{resolver: rv}
	res := &WarmResult{Subject: r.subject.String(), Artifact: r.artifact.Digest.String()}
	for i, lc := range r.cfg.Layers {
		if e, ok := loadCacheEntry(opt.Root, lc.ChainID); ok && rv.cacheUsable(e) == nil {
			res.Present = append(res.Present, lc.ChainID)
			continue
		}
		// Not cached, or cached under a policy this verifier does not
		// accept (e.g. --trust-unsigned): written again with this verdict.
		stage, err := os.MkdirTemp(stagingDir(opt.Root), "warm-")
		if err != nil {
			return nil, err
		}
		err = func() error {
			defer os.RemoveAll(stage)
			if err := s.download(ctx, r, i, stage); err != nil {
				return fmt.Errorf("layer %d (%s): %w", i, lc.ChainID, err)
			}
			e := cacheEntry{ChainID: lc.ChainID, Subject: r.subject.String(), Layer: lc, Trust: r.trust,
				Provenance: provenance{RegionSet: RegionSet(lc), Builder: r.cfg.Builder, WindowsBuild: r.cfg.WindowsBuild, Format: r.cfg.Format, Artifact: r.artifact.Digest.String()}}
			if i > 0 {
				e.ParentChainID, e.ParentRegionSet = r.chainIDs[i-1], RegionSet(r.cfg.Layers[i-1])
			}
			b, err := json.MarshalIndent(e, "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(stage, entryFile), b, 0o600); err != nil {
				return err
			}
			dst := filepath.Join(cacheDir(opt.Root), chainHex(lc.ChainID))
			if _, err := os.Lstat(dst); err == nil {
				// An entry this verifier does not accept: set aside (one
				// rename, so a reader sees the old entry or none), then
				// replaced.
				old, err := os.MkdirTemp(stagingDir(opt.Root), "replaced-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(old)
				if err := os.Rename(dst, filepath.Join(old, "entry")); err != nil {
					return fmt.Errorf("replacing cache entry %s: %w", dst, err)
				}
			}
			if err := os.Rename(stage, dst); err != nil && !os.IsExist(err) {
				if _, ok := loadCacheEntry(opt.Root, lc.ChainID); !ok {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			return nil, fmt.Errorf("warm %s: %w", image, err)
		}
		res.Cached = append(res.Cached, lc.ChainID)
	}
	return res, nil
}
