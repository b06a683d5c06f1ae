package webhook

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// allowEntry is one allowlist line: a registry host[:port] and an optional
// repository prefix (matched on path-element boundaries).
type allowEntry struct {
	host   string
	prefix string
}

func parseAllowEntry(s string) (allowEntry, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return allowEntry{}, fmt.Errorf("webhook allowlist entry %q: empty", orig)
	}
	if strings.Contains(s, "://") {
		return allowEntry{}, fmt.Errorf("webhook allowlist entry %q: give host[:port][/repo-prefix], not a URL", orig)
	}
	host, prefix, _ := strings.Cut(s, "/")
	host = strings.ToLower(host)
	if err := checkHost(host); err != nil {
		return allowEntry{}, fmt.Errorf("webhook allowlist entry %q: %w", orig, err)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		if _, err := name.NewRepository(host+"/"+prefix, name.StrictValidation); err != nil {
			return allowEntry{}, fmt.Errorf("webhook allowlist entry %q: invalid repository prefix %q", orig, prefix)
		}
	}
	return allowEntry{host: host, prefix: prefix}, nil
}

func (a allowEntry) allows(registry, repo string) bool {
	if registry != a.host {
		return false
	}
	return a.prefix == "" || repo == a.prefix || strings.HasPrefix(repo, a.prefix+"/")
}

// refuse returns why an event is refused by the allowlist, or "".
func (h *Handler) refuse(e Event) string {
	if len(h.cfg.allow) == 0 {
		return fmt.Sprintf("registry %s is not allowed: no registries are configured", e.Registry)
	}
	for _, a := range h.cfg.allow {
		if a.allows(e.Registry, e.Repository) {
			return ""
		}
	}
	return fmt.Sprintf("repository %s/%s is not on the registry allowlist", e.Registry, e.Repository)
}

// validateEvent checks that an event names a well-formed image reference:
// the worker will contact that registry, so nothing odd may pass.
func validateEvent(e Event) error {
	if e.Registry == "" {
		return fmt.Errorf("event %q names no registry (add ?registry=host to the webhook URL for senders that omit it)", e.ID)
	}
	if e.Repository == "" {
		return fmt.Errorf("event %q names no repository", e.ID)
	}
	if e.Digest == "" && e.Tag == "" {
		return fmt.Errorf("event for %s/%s has neither digest nor tag", e.Registry, e.Repository)
	}
	if err := checkHost(e.Registry); err != nil {
		return fmt.Errorf("event for %s: %w", e.Repository, err)
	}
	if _, err := name.NewRepository(e.Registry+"/"+e.Repository, name.StrictValidation); err != nil {
		return fmt.Errorf("event names an invalid repository %q", e.Repository)
	}
	if e.Digest != "" {
		if _, err := name.NewDigest(e.Registry+"/"+e.Repository+"@"+e.Digest, name.StrictValidation); err != nil {
			return fmt.Errorf("event names an invalid digest %q", e.Digest)
		}
	}
	if e.Tag != "" {
		if _, err := name.NewTag(e.Registry+"/"+e.Repository+":"+e.Tag, name.StrictValidation); err != nil {
			return fmt.Errorf("event names an invalid tag %q", e.Tag)
		}
	}
	return nil
}

// checkHost accepts host[:port] names that image references keep as a
// registry: a host without '.' or ':' (other than localhost) would be read
// as a Docker Hub namespace by every reference parser.
func checkHost(host string) error {
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil || strings.ContainsAny(host, "/@?#") {
		return fmt.Errorf("invalid registry host %q", host)
	}
	if host != "localhost" && !strings.ContainsAny(host, ".:") {
		return fmt.Errorf("registry host %q has no '.' or ':' and would be read as a Docker Hub namespace", host)
	}
	return nil
}
