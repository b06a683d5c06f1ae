package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
)

// CimDirName and LayersDirName are the two folders of DEST.
const (
	CimDirName    = "cim-layers"
	LayersDirName = "layers"
)

// ErrNoArtifact means the image has no usable cimconv artifact.
var ErrNoArtifact = errdefs.New(errdefs.ErrNotFound, "no cimconv artifact")

// Options says what to fetch.
type Options struct {
	// Dest is the directory the chain is laid out in.
	Dest string
	// NodeBuild is the node's Windows build ("10.0.20348.2340" or "20348");
	// empty accepts any artifact and any image os.version.
	NodeBuild string
	// Platform selects the image manifest (default windows/amd64).
	Platform v1.Platform
	// Verifier decides which artifacts may be used; required (use
	// trust.AllowUnsigned() for development only).
	Verifier trust.Verifier
	// MaxCandidates bounds the artifacts verified (DefaultMaxCandidates).
	MaxCandidates int
}

// Result says what was placed.
type Result struct {
	Subject  string  `json:"subject"`
	Artifact string  `json:"artifact"`
	Builder  string  `json:"builder"`
	Cim      string  `json:"cim"` // path of the top layer's .cim
	Layers   []Layer `json:"layers"`
	Entries  int     `json:"entries"` // paths in the top CIM's view (it opened and walked)
	// Trust is what verification established (signer key id, checks).
	Trust *trust.Result `json:"trust,omitempty"`
}

// Layer is one placed layer.
type Layer struct {
	ChainID string `json:"chainID"`
	Cim     string `json:"cim"`
	SideDir string `json:"sideDir,omitempty"`
	Blob    string `json:"blob"`
}

// Fetcher fetches artifacts.
type Fetcher struct {
	reg *registry.Client
	log *zap.Logger
}

// New returns a Fetcher.
func New(reg *registry.Client, log *zap.Logger) *Fetcher {
	if log == nil {
		log = zap.NewNop()
	}
	return &Fetcher{reg: reg, log: log}
}

// DefaultMaxCandidates bounds the artifacts of one image verified before
// giving up (artifact.MaxCandidates).
const DefaultMaxCandidates = artifact.MaxCandidates

// Found is the trusted artifact Find chose, with the candidates it refused.
type Found struct {
	Target   *registry.Target `json:"-"`
	Subject  string           `json:"subject"`
	Artifact v1.Descriptor    `json:"artifact"`
	Manifest []byte           `json:"-"`
	Trust    *trust.Result    `json:"trust"`
	// Candidates is how many compatible artifacts referred to the image.
	Candidates int `json:"candidates"`
	// Refused lists the candidates verified and refused before this one.
	Refused []Refusal `json:"refused,omitempty"`
}

// Refusal is a candidate artifact that failed verification.
type Refusal struct {
	Artifact string   `json:"artifact"`
	Reason   string   `json:"reason"`
	Checks   []string `json:"checks,omitempty"`
}

// Find resolves image for opt's platform and node build, and returns its
// newest compatible artifact that opt.Verifier trusts, verifying candidates
// newest first (their annotations are not signed, so the order is only a
// preference). When none is trusted the error wraps the best-ranked
// candidate's verdict (trust.ErrUnsigned, ...) and Found, if not nil, lists
// every refusal.
func (f *Fetcher) Find(ctx context.Context, image string, opt Options) (*Found, error) {
	if opt.Verifier == nil {
		return nil, fmt.Errorf("fetch %s: no trust policy: give trusted keys (--trusted-key) or allow unsigned artifacts (--trust-unsigned, development only)", image)
	}
	opt = opt.withDefaults()
	policy := registry.OSVersionPolicy{Mode: "all"}
	if opt.NodeBuild != "" {
		p, err := registry.ParseOSVersionPolicy("compatible:" + opt.NodeBuild)
		if err != nil {
			return nil, fmt.Errorf("--os-build %q: %w", opt.NodeBuild, err)
		}
		policy = p
	}
	targets, err := f.reg.Resolve(ctx, image, opt.Platform, policy)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", image, err)
	}
	// The newest compatible image os.version first.
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].Platform.OSVersion > targets[j].Platform.OSVersion })
	t := targets[0]

	descs, err := f.reg.Referrers(ctx, t.Ref, artifact.ArtifactType)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", t.Ref, err)
	}
	byDigest := map[string]v1.Descriptor{}
	var cands []artifact.Candidate
	for _, d := range descs {
		byDigest[d.Digest.String()] = d
		cands = append(cands, artifact.Candidate{Digest: d.Digest.String(), Annotations: d.Annotations})
	}
	ranked := artifact.Rank(cands, opt.NodeBuild)
	if len(ranked) == 0 {
		return nil, fmt.Errorf("%w for %s (%d referrers, none compatible with node build %q)", ErrNoArtifact, t.Ref, len(descs), opt.NodeBuild)
	}
	found := &Found{Target: &t, Subject: t.Ref.String(), Candidates: len(ranked)}
	repo := t.Ref.Context()
	// Verified in rank order, a window at a time (trust.First).
	n := min(len(ranked), opt.MaxCandidates)
	type verdict struct {
		desc v1.Descriptor
		raw  []byte
		res  *trust.Result
	}
	verdicts := make([]verdict, n)
	check := func(ctx context.Context, i int) error {
		c := ranked[i]
		d := byDigest[c.Digest]
		if d.Digest.Algorithm != "sha256" {
			return fmt.Errorf("%w: artifact %s: digest is not sha256", trust.ErrMalformed, c.Digest)
		}
		raw, _, err := f.reg.FetchManifest(ctx, repo.Digest(c.Digest))
		if err != nil {
			// A listed manifest that is missing or not what its digest says
			// is junk anyone who can push can list: a refusal, not the end
			// of the search. A registry that could not answer ends it.
			if trust.IsBadContent(err) {
				return fmt.Errorf("%w: artifact %s: %w", trust.ErrMalformed, c.Digest, err)
			}
			return fmt.Errorf("artifact %s: %w", c.Digest, err)
		}
		if d.MediaType == "" {
			d.MediaType = types.OCIManifestSchema1
		}
		res, err := opt.Verifier.Verify(ctx, trust.Request{Subject: t.Ref, Artifact: d, Manifest: raw})
		verdicts[i] = verdict{d, raw, res}
		return err
	}
	var first error
	refused := func(i int, err error) {
		if first == nil {
			first = err
		}
		r := Refusal{Artifact: ranked[i].Digest, Reason: err.Error()}
		if res := verdicts[i].res; res != nil {
			r.Checks = res.Checks
		}
		found.Refused = append(found.Refused, r)
		f.log.Info("artifact refused", zap.String("image", t.Ref.String()), zap.String("artifact", ranked[i].Digest), zap.Error(err))
	}
	i, err := trust.First(ctx, n, trust.SearchWindow, check, func(err error) bool { return errors.Is(err, trust.ErrUntrusted) }, refused)
	if err != nil {
		return found, err
	}
	if i >= 0 {
		found.Artifact, found.Manifest, found.Trust = verdicts[i].desc, verdicts[i].raw, verdicts[i].res
		return found, nil
	}
	more := ""
	if len(ranked) > opt.MaxCandidates {
		more = fmt.Sprintf(", %d more not examined", len(ranked)-opt.MaxCandidates)
	}
	return found, fmt.Errorf("no trusted cimconv artifact for %s: %d refused%s; newest: %w", t.Ref, len(found.Refused), more, first)
}

func (o Options) withDefaults() Options {
	if o.Platform.OS == "" {
		o.Platform.OS = "windows"
	}
	if o.Platform.Architecture == "" {
		o.Platform.Architecture = "amd64"
	}
	if o.MaxCandidates <= 0 {
		o.MaxCandidates = DefaultMaxCandidates
	}
	return o
}

// Fetch finds the trusted artifact of image (Find), verifies every digest,
// and lays its CIM chain out in opt.Dest.
func (f *Fetcher) Fetch(ctx context.Context, image string, opt Options) (*Result, error) {
	if opt.Dest == "" {
		return nil, fmt.Errorf("fetch %s: no destination directory", image)
	}
	found, err := f.Find(ctx, image, opt)
	if err != nil {
		return nil, err
	}
	t := *found.Target
	chosen := artifact.Candidate{Digest: found.Artifact.Digest.String()}
	repo := t.Ref.Context()
	var m v1.Manifest
	if err := json.Unmarshal(found.Manifest, &m); err != nil {
		return nil, fmt.Errorf("artifact %s: manifest: %w", chosen.Digest, err)
	}
	if m.ArtifactType != artifact.ArtifactType || m.Subject == nil || m.Subject.Digest != t.Descriptor.Digest {
		return nil, fmt.Errorf("artifact %s: not a cimconv artifact for %s", chosen.Digest, t.Ref)
	}
	cfg, err := f.config(ctx, repo, m.Config)
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", chosen.Digest, err)
	}
	if len(cfg.Layers) != len(m.Layers) || len(cfg.Layers) != len(t.Layers) {
		return nil, fmt.Errorf("artifact %s: %d layer blobs, config lists %d, image has %d layers", chosen.Digest, len(m.Layers), len(cfg.Layers), len(t.Layers))
	}
	// The chainID names the layer's directory in DEST, so it is bound to
	// the image here whatever the verifier checked (AllowUnsigned checks
	// nothing): it must be the chain ID of the image's diffIDs.
	parent := ""
	for i, l := range cfg.Layers {
		parent = builder.ChainID(parent, t.Layers[i].DiffID.String())
		switch {
		case l.DiffID != t.Layers[i].DiffID.String():
			return nil, fmt.Errorf("artifact %s: layer %d diffID %s does not match the image's %s", chosen.Digest, i, l.DiffID, t.Layers[i].DiffID)
		case l.ChainID != parent:
			return nil, fmt.Errorf("artifact %s: layer %d chainID %q does not match the image's %s", chosen.Digest, i, l.ChainID, parent)
		}
	}

	// Unpack into a staging directory, then move into place: a failure
	// leaves DEST as it was.
	if err := os.MkdirAll(opt.Dest, 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(opt.Dest, ".fetch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	res := &Result{Subject: t.Ref.String(), Artifact: chosen.Digest, Builder: cfg.Builder, Trust: found.Trust}
	for i, d := range m.Layers {
		lc := cfg.Layers[i]
		if string(d.MediaType) != artifact.LayerMediaType {
			return nil, fmt.Errorf("artifact %s: layer %d has media type %s", chosen.Digest, i, d.MediaType)
		}
		hex := strings.TrimPrefix(lc.ChainID, "sha256:")
		if err := f.unpack(ctx, repo, d, filepath.Join(stage, CimDirName), filepath.Join(stage, LayersDirName, hex), &lc); err != nil {
			return nil, fmt.Errorf("artifact %s: layer %d (%s): %w", chosen.Digest, i, d.Digest, err)
		}
		l := Layer{ChainID: lc.ChainID, Cim: filepath.Join(opt.Dest, CimDirName, lc.Cim), Blob: d.Digest.String()}
		if len(lc.SideFiles) > 0 {
			l.SideDir = filepath.Join(opt.Dest, LayersDirName, hex)
		}
		res.Layers = append(res.Layers, l)
	}
	// Check the chain opens before placing it.
	top := filepath.Join(stage, CimDirName, cfg.Layers[len(cfg.Layers)-1].Cim)
	n, err := checkCIM(top)
	if err != nil {
		return nil, fmt.Errorf("artifact %s: fetched CIM does not open: %w", chosen.Digest, err)
	}
	res.Entries = n
	if err := place(stage, opt.Dest); err != nil {
		return nil, err
	}
	res.Cim = res.Layers[len(res.Layers)-1].Cim
	f.log.Info("CIM chain placed", zap.String("image", res.Subject), zap.String("artifact", res.Artifact), zap.String("cim", res.Cim))
	return res, nil
}

func (f *Fetcher) config(ctx context.Context, repo name.Repository, d v1.Descriptor) (*artifact.Config, error) {
	if string(d.MediaType) != artifact.ArtifactType {
		return nil, fmt.Errorf("config media type %s", d.MediaType)
	}
	if d.Size > 16<<20 {
		return nil, fmt.Errorf("config of %d bytes is too large", d.Size)
	}
	rc, err := f.reg.FetchBlob(ctx, repo, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, err
	}
	var cfg artifact.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (f *Fetcher) unpack(ctx context.Context, repo name.Repository, d v1.Descriptor, cimDir, sideDir string, lc *artifact.LayerConfig) error {
	rc, err := f.reg.FetchBlob(ctx, repo, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := artifact.Unpack(rc, cimDir, sideDir, lc); err != nil {
		return err
	}
	// Read to the end so the digest is verified even past the tar's end.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return err
	}
	return rc.Close()
}

func checkCIM(path string) (int, error) {
	im, err := cim.Open(path)
	if err != nil {
		return 0, err
	}
	defer im.Close()
	v, err := im.View()
	if err != nil {
		return 0, err
	}
	return len(v), nil
}

// place moves staged files into dest. A file already present with the same
// name is kept: CIM file names are unique per build (GUIDs), so the same name
// is the same content.
func place(stage, dest string) error {
	return filepath.Walk(stage, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(stage, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(dest, rel)
		if _, err := os.Stat(dst); err == nil {
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.Rename(p, dst)
	})
}
