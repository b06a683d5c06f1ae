package artifact

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Media types.
const (
	// ArtifactType is the manifest's artifactType and its config media type.
	ArtifactType = "application/vnd.cimconv.cim.v1+json"
	// LayerMediaType is the media type of a per-layer blob.
	LayerMediaType = "application/vnd.cimconv.cim.layer.v1.tar+zstd"
)

// Annotation keys.
const (
	AnnotationSourceDigest  = "io.cimconv.source.digest"
	AnnotationSourceDiffID  = "io.cimconv.source.diffid"
	AnnotationChainID       = "io.cimconv.chainid"
	AnnotationCimFormat     = "io.cimconv.cim.format"
	AnnotationCimVersion    = "io.cimconv.cim.version"
	AnnotationBuilder       = "io.cimconv.builder"
	AnnotationWindowsBuild  = "io.cimconv.windows.build"
	AnnotationExperimental  = "io.cimconv.experimental"
	AnnotationHiveMerge     = "io.cimconv.hive.merge"
	AnnotationIntegrity     = "io.cimconv.cim.integrity"
	AnnotationFormatVersion = "io.cimconv.format.version"
	AnnotationConverter     = "io.cimconv.converter.version"
	AnnotationOptions       = "io.cimconv.options"
	AnnotationCreated       = "org.opencontainers.image.created"
)

// Config is the artifact's config blob.
type Config struct {
	// Subject is the digest of the image manifest the artifact was built from
	// ("sha256:..."); signed artifacts are bound to it. Empty in artifacts
	// built before signing existed.
	Subject string `json:"subject,omitempty"`
	// FormatVersion is the artifact layout version (version.FormatVersion).
	FormatVersion string `json:"formatVersion"`
	// Converter is the converter release that built it.
	Converter string `json:"converter"`
	// BuildInfo is the build of the base layer; Experimental is set when
	// any layer's build is experimental.
	BuildInfo
	// Options is the normalized conversion options string.
	Options string `json:"options,omitempty"`
	// Layers lists the chain, base first; Layers[i] is the i-th layer blob.
	Layers []LayerConfig `json:"layers"`
}

// BuildInfo says which builder wrote a CIM and what it wrote. The artifact
// config carries it (flattened), each layer descriptor carries it as
// annotations and the chain cache records it with every layer. Field order
// is the config's JSON order.
type BuildInfo struct {
	// Format is the CIM format: "forked" or "block".
	Format string `json:"format"`
	// CimVersion is the CIM on-disk version, e.g. "3.0".
	CimVersion string `json:"cimVersion"`
	// Builder names the builder ("portable", "hcsshim").
	Builder string `json:"builder"`
	// Experimental is true when the builder is not validated against CimFS.dll.
	Experimental bool `json:"experimental,omitempty"`
	// WindowsBuild is the OS build the CIMs were written on or for
	// ("10.0.20348.2031"); empty when host-independent.
	WindowsBuild string `json:"windowsBuild,omitempty"`
	// HiveMerge names the merge that produced the layer's Hives/*_BASE from
	// delta hives (builder.HiveMergePortable); empty when none was merged
	// or Windows' offreg did it.
	HiveMerge string `json:"hiveMerge,omitempty"`
}

// LayerConfig describes one layer of the chain.
type LayerConfig struct {
	SourceDigest string   `json:"sourceDigest"`
	DiffID       string   `json:"diffID"`
	ChainID      string   `json:"chainID"`
	Cim          string   `json:"cim"`                 // the .cim file name
	CimFiles     []string `json:"cimFiles"`            // .cim, region_*, objectid_* in the blob
	SideFiles    []string `json:"sideFiles,omitempty"` // Hives/*_BASE, layout in the blob
	Integrity    string   `json:"integrity,omitempty"`
}

// Validate checks the config a node fetched before it trusts any name in it.
func (c *Config) Validate() error {
	if c.FormatVersion == "" {
		return fmt.Errorf("artifact config: no formatVersion")
	}
	if len(c.Layers) == 0 {
		return fmt.Errorf("artifact config: no layers")
	}
	for i, l := range c.Layers {
		if !strings.HasSuffix(l.Cim, ".cim") || !safeName(l.Cim) {
			return fmt.Errorf("artifact config: layer %d: bad CIM name %q", i, l.Cim)
		}
		for _, f := range l.CimFiles {
			if !safeName(f) {
				return fmt.Errorf("artifact config: layer %d: bad CIM file name %q", i, f)
			}
		}
		for _, f := range l.SideFiles {
			if err := SafeRelPath(f); err != nil {
				return fmt.Errorf("artifact config: layer %d: side file: %w", i, err)
			}
		}
		// Nodes use the chainID as a directory name (converter fetch's
		// DEST/layers/<hex>, the snapshotter's cache), so it must be a
		// digest and nothing else: "sha256:../../.." has the right length.
		if !isSHA256Digest(l.ChainID) {
			return fmt.Errorf("artifact config: layer %d: bad chainID %q (want sha256: and 64 lowercase hex digits)", i, l.ChainID)
		}
		if l.DiffID != "" && !isSHA256Digest(l.DiffID) {
			return fmt.Errorf("artifact config: layer %d: bad diffID %q (want sha256: and 64 lowercase hex digits)", i, l.DiffID)
		}
	}
	return nil
}

// isSHA256Digest reports whether s is "sha256:" and 64 lowercase hex digits.
func isSHA256Digest(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// safeName reports whether s is a plain file name (no directories).
func safeName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\:\x00")
}

// SafeRelPath checks a slash-separated relative path from an untrusted blob.
func SafeRelPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\:\x00") {
		return fmt.Errorf("unsafe path %q", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("unsafe path %q", p)
		}
	}
	return nil
}

// Candidate is one artifact found for a subject, as listed by referrers.
type Candidate struct {
	Digest      string
	Annotations map[string]string
}

// Created returns the artifact's creation time from its annotations.
func (c Candidate) Created() time.Time {
	t, _ := time.Parse(time.RFC3339, c.Annotations[AnnotationCreated])
	return t
}

// Compatible reports whether an artifact built on windowsBuild can be used on
// a node running nodeBuild (both "10.0.B.R" or "B"). Host-independent
// artifacts (no build) are always compatible. A node can use CIMs written by
// the same or an older build of the same major.minor, never a newer one: CIM
// format versions only grow.
func Compatible(windowsBuild, nodeBuild string) bool {
	if windowsBuild == "" || nodeBuild == "" {
		return true
	}
	a, errA := buildNumber(windowsBuild)
	n, errN := buildNumber(nodeBuild)
	if errA != nil || errN != nil {
		return false
	}
	return a <= n
}

func buildNumber(v string) (int, error) {
	parts := strings.Split(v, ".")
	s := parts[0]
	if len(parts) >= 3 {
		s = parts[2]
	}
	return strconv.Atoi(s)
}

// Choose picks the newest artifact compatible with nodeBuild among
// candidates; it never takes the first one blindly. It returns false when
// none is compatible.
func Choose(cands []Candidate, nodeBuild string) (Candidate, bool) {
	r := Rank(cands, nodeBuild)
	if len(r) == 0 {
		return Candidate{}, false
	}
	return r[0], true
}

// MaxCandidates bounds the artifacts of one image a node verifies, in Rank
// order, before it gives up: anyone who can push can plant newer junk, and
// each refused candidate costs about two registry requests (four when it is
// signed by an untrusted key), so this bounds the cost of finding the
// genuine artifact behind up to MaxCandidates-1 planted ones.
const MaxCandidates = 4096

// Rank returns the candidates compatible with nodeBuild, newest first (by
// their created annotation, then digest). A node verifies them in this
// order and takes the first trusted one: annotations are unsigned, so the
// order is only a preference.
func Rank(cands []Candidate, nodeBuild string) []Candidate {
	var ok []Candidate
	for _, c := range cands {
		if c.Annotations[AnnotationFormatVersion] == "" {
			continue
		}
		if Compatible(c.Annotations[AnnotationWindowsBuild], nodeBuild) {
			ok = append(ok, c)
		}
	}
	sort.SliceStable(ok, func(i, j int) bool {
		ti, tj := ok[i].Created(), ok[j].Created()
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return ok[i].Digest > ok[j].Digest // deterministic tie-break
	})
	return ok
}

// MarshalConfig encodes c deterministically.
func MarshalConfig(c *Config) ([]byte, error) { return json.Marshal(c) }
