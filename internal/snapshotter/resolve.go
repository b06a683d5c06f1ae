package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
)

// resolver finds and verifies artifacts; the Snapshotter and Warm share it.
type resolver struct {
	reg       *registry.Client
	verifier  trust.Verifier
	nodeBuild string
	formats   []string
	mirrors   map[string][]string
}

// anonymous is a keychain with no credentials.
type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

// resolved is a verified artifact for one image manifest: every binding
// between the artifact and the image has been checked.
type resolved struct {
	subject  name.Digest   // the image manifest, in the repository it was found in
	artifact v1.Descriptor // the artifact manifest
	cfg      *artifact.Config
	blobs    []v1.Descriptor // the artifact's layer blobs, base first
	layers   []string        // the image manifest's layer digests, base first
	chainIDs []string        // the image's chainIDs, base first
	trust    *trust.Result
}

// layerIndex finds the layer of the image with this layer digest and chainID.
// A manifest may list the same blob more than once (a layer re-added on top
// of others); each position has its own chainID, so every position holding
// the digest is checked, not only the first.
func (r *resolved) layerIndex(layerDigest, chainID string) (int, error) {
	var at []string
	for i, d := range r.layers {
		if d != layerDigest {
			continue
		}
		if r.chainIDs[i] == chainID {
			return i, nil
		}
		at = append(at, fmt.Sprintf("%d (chainID %s)", i, r.chainIDs[i]))
	}
	if len(at) > 0 {
		return 0, fall(ReasonBinding, "layer %s is at position %s, containerd asked for chainID %s", layerDigest, strings.Join(at, ", "), chainID)
	}
	return 0, fall(ReasonBinding, "layer %s is not in manifest %s", layerDigest, r.subject.DigestStr())
}

// candidateRepos lists where to look for repo's artifacts: the configured
// mirrors first, then the repository itself.
func (s *resolver) candidateRepos(repo name.Repository) []name.Repository {
	var out []name.Repository
	for _, m := range s.mirrors[repo.RegistryStr()] {
		if r, err := name.NewRepository(m+"/"+repo.RepositoryStr(), name.Insecure); err == nil {
			out = append(out, r)
		}
	}
	return append(out, repo)
}

// resolve finds and verifies the cimconv artifact of manifest (in imageRef's
// repository, or a mirror).
func (s *resolver) resolve(ctx context.Context, imageRef, manifest string) (*resolved, error) {
	ref, err := name.ParseReference(imageRef, name.WeakValidation)
	if err != nil {
		return nil, fall(ReasonBinding, "image reference %q: %v", imageRef, err)
	}
	if _, err := v1.NewHash(manifest); err != nil {
		return nil, fall(ReasonBinding, "manifest digest %q: %v", manifest, err)
	}
	var last error
	for _, repo := range s.candidateRepos(ref.Context()) {
		r, err := s.resolveIn(ctx, repo, manifest)
		if err == nil {
			return r, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

func (s *resolver) resolveIn(ctx context.Context, repo name.Repository, manifest string) (*resolved, error) {
	subject := repo.Digest(manifest)
	// The image manifest and config give the layer digests and diffIDs the
	// artifact must be bound to.
	raw, _, err := s.reg.FetchManifest(ctx, subject)
	if err != nil {
		return nil, err
	}
	var im v1.Manifest
	if err := json.Unmarshal(raw, &im); err != nil {
		return nil, fall(ReasonBinding, "manifest %s: %v", manifest, err)
	}
	if len(im.Layers) == 0 {
		return nil, fall(ReasonBinding, "manifest %s is not an image manifest", manifest)
	}
	cfgRaw, err := s.readBlob(ctx, repo, im.Config, 4<<20)
	if err != nil {
		return nil, err
	}
	var ic v1.ConfigFile
	if err := json.Unmarshal(cfgRaw, &ic); err != nil {
		return nil, fall(ReasonBinding, "image config %s: %v", im.Config.Digest, err)
	}
	if len(ic.RootFS.DiffIDs) != len(im.Layers) {
		return nil, fall(ReasonBinding, "image config lists %d diffIDs for %d layers", len(ic.RootFS.DiffIDs), len(im.Layers))
	}
	r := &resolved{subject: subject}
	parent := ""
	for i, l := range im.Layers {
		r.layers = append(r.layers, l.Digest.String())
		parent = builder.ChainID(parent, ic.RootFS.DiffIDs[i].String())
		r.chainIDs = append(r.chainIDs, parent)
	}

	descs, err := s.reg.Referrers(ctx, subject, artifact.ArtifactType)
	if err != nil {
		return nil, err
	}
	if len(descs) == 0 {
		return nil, fall(ReasonNoArtifact, "no cimconv artifact refers to %s", subject)
	}
	var cands []artifact.Candidate
	for _, d := range descs {
		if f := d.Annotations[artifact.AnnotationCimFormat]; f != "" && !slices.Contains(s.formats, f) {
			continue
		}
		cands = append(cands, artifact.Candidate{Digest: d.Digest.String(), Annotations: d.Annotations})
	}
	ranked := artifact.Rank(cands, s.nodeBuild)
	if len(ranked) == 0 {
		return nil, fall(ReasonIncompatible, "%d artifacts for %s, none usable with node build %q and CIM formats %v", len(descs), subject, s.nodeBuild, s.formats)
	}
	// Candidates are verified newest first, a window at a time
	// (trust.First), and the first trusted one is used: their annotations
	// are unsigned, so anyone who can push could rank junk first; junk
	// costs a refusal, not the fast path.
	byDigest := make(map[string]v1.Descriptor, len(descs))
	for _, d := range descs {
		byDigest[d.Digest.String()] = d
	}
	n := min(len(ranked), maxCandidates)
	type verdict struct {
		desc v1.Descriptor
		am   v1.Manifest
		res  *trust.Result
	}
	verdicts := make([]verdict, n)
	check := func(ctx context.Context, i int) error {
		adesc := byDigest[ranked[i].Digest]
		if adesc.MediaType == "" {
			adesc.MediaType = types.OCIManifestSchema1
		}
		res, m, err := s.verifyCandidate(ctx, repo, subject, adesc)
		verdicts[i] = verdict{adesc, m, res}
		return err
	}
	refusal := func(err error) bool {
		var ft *fallThrough
		return errors.Is(err, trust.ErrUntrusted) || errors.As(err, &ft) && ft.reason == ReasonBinding
	}
	var first error
	idx, err := trust.First(ctx, n, trust.SearchWindow, check, refusal, func(_ int, err error) {
		if first == nil {
			first = err
		}
	})
	if err != nil {
		return nil, err // the registry failed: say so, do not try on
	}
	if idx < 0 {
		more := ""
		if len(ranked) > maxCandidates {
			more = fmt.Sprintf(" (%d more not examined)", len(ranked)-maxCandidates)
		}
		return nil, fmt.Errorf("no usable artifact among %d for %s%s; newest: %w", n, manifest, more, first)
	}
	chosen, am := ranked[idx], verdicts[idx].am
	r.trust, r.artifact = verdicts[idx].res, verdicts[idx].desc

	if string(am.Config.MediaType) != artifact.ArtifactType {
		return nil, fall(ReasonBinding, "artifact %s: config media type %s", chosen.Digest, am.Config.MediaType)
	}
	acRaw, err := s.readBlob(ctx, repo, am.Config, 16<<20)
	if err != nil {
		return nil, err
	}
	var cfg artifact.Config
	if err := json.Unmarshal(acRaw, &cfg); err != nil {
		return nil, fall(ReasonDigest, "artifact %s config: %v", chosen.Digest, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fall(ReasonDigest, "artifact %s: %v", chosen.Digest, err)
	}
	if !slices.Contains(s.formats, cfg.Format) {
		return nil, fall(ReasonIncompatible, "artifact %s holds %q CIMs, this snapshotter uses %v", chosen.Digest, cfg.Format, s.formats)
	}
	if !artifact.Compatible(cfg.WindowsBuild, s.nodeBuild) {
		return nil, fall(ReasonIncompatible, "artifact %s was built for Windows %s, node is %s", chosen.Digest, cfg.WindowsBuild, s.nodeBuild)
	}
	if len(cfg.Layers) != len(am.Layers) || len(cfg.Layers) != len(im.Layers) {
		return nil, fall(ReasonBinding, "artifact %s: %d blobs, config lists %d layers, image has %d", chosen.Digest, len(am.Layers), len(cfg.Layers), len(im.Layers))
	}
	for i, l := range cfg.Layers {
		switch {
		case l.SourceDigest != r.layers[i]:
			return nil, fall(ReasonBinding, "artifact %s: layer %d source %s, image has %s", chosen.Digest, i, l.SourceDigest, r.layers[i])
		case l.DiffID != ic.RootFS.DiffIDs[i].String():
			return nil, fall(ReasonBinding, "artifact %s: layer %d diffID %s, image has %s", chosen.Digest, i, l.DiffID, ic.RootFS.DiffIDs[i])
		case l.ChainID != r.chainIDs[i]:
			return nil, fall(ReasonBinding, "artifact %s: layer %d chainID %s, image has %s", chosen.Digest, i, l.ChainID, r.chainIDs[i])
		case string(am.Layers[i].MediaType) != artifact.LayerMediaType:
			return nil, fall(ReasonBinding, "artifact %s: layer %d media type %s", chosen.Digest, i, am.Layers[i].MediaType)
		}
		if RegionSet(l) == "" {
			return nil, fall(ReasonIncompatible, "artifact %s: layer %d has no region files", chosen.Digest, i)
		}
	}
	r.cfg = &cfg
	r.blobs = am.Layers
	return r, nil
}

// maxCandidates bounds the artifacts of one manifest verified before the
// layer falls through: the same bound as converter fetch, so the genuine
// artifact is found behind as many planted newer ones (it was 64, so 64
// planted artifacts took a node's fast path away). The lookup runs once per
// image, its cost bounded by the fast path's timeout.
const maxCandidates = artifact.MaxCandidates

// verifyCandidate fetches an artifact manifest, checks it is a cimconv
// artifact of manifest and asks the verifier whether it may be used.
func (s *resolver) verifyCandidate(ctx context.Context, repo name.Repository, subject name.Digest, adesc v1.Descriptor) (*trust.Result, v1.Manifest, error) {
	var am v1.Manifest
	if adesc.Digest.Algorithm != "sha256" {
		return nil, am, fmt.Errorf("%w: artifact %s: digest is not sha256", trust.ErrMalformed, adesc.Digest)
	}
	araw, _, err := s.reg.FetchManifest(ctx, repo.Digest(adesc.Digest.String()))
	if err != nil {
		// A listed manifest that is missing or not what its digest says is
		// junk anyone who can push can list: a refusal of this candidate.
		// A registry that could not answer ends the search.
		if trust.IsBadContent(err) {
			return nil, am, fmt.Errorf("%w: artifact %s: %w", trust.ErrMalformed, adesc.Digest, err)
		}
		return nil, am, err
	}
	if err := json.Unmarshal(araw, &am); err != nil {
		return nil, am, fall(ReasonBinding, "artifact %s: %v", adesc.Digest, err)
	}
	if am.ArtifactType != artifact.ArtifactType || am.Subject == nil || am.Subject.Digest.String() != subject.DigestStr() {
		return nil, am, fall(ReasonBinding, "artifact %s is not a cimconv artifact for %s", adesc.Digest, subject.DigestStr())
	}
	// Trust before anything of the artifact is used.
	res, err := s.verifier.Verify(ctx, trust.Request{Subject: subject, Artifact: adesc, Manifest: araw})
	if err != nil {
		return nil, am, fmt.Errorf("artifact %s: %w", adesc.Digest, err)
	}
	return res, am, nil
}

func (s *resolver) readBlob(ctx context.Context, repo name.Repository, d v1.Descriptor, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fall(ReasonBinding, "blob %s of %d bytes is too large", d.Digest, d.Size)
	}
	return s.reg.ReadBlob(ctx, repo, d, limit)
}

// chainHex is a chainID without its algorithm.
func chainHex(chainID string) string { return strings.TrimPrefix(chainID, "sha256:") }
