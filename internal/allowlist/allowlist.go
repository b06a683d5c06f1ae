package allowlist

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Entry is one allowlist line: a registry host[:port] and an optional
// repository prefix.
type Entry struct {
	Host   string
	Prefix string
}

// Parse reads one entry; errors name the entry and say what is wrong.
func Parse(s string) (Entry, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Entry{}, fmt.Errorf("allowlist entry %q: empty", orig)
	}
	if strings.Contains(s, "://") {
		return Entry{}, fmt.Errorf("allowlist entry %q: give host[:port][/repo-prefix], not a URL", orig)
	}
	host, prefix, _ := strings.Cut(s, "/")
	host = strings.ToLower(host)
	if err := CheckHost(host); err != nil {
		return Entry{}, fmt.Errorf("allowlist entry %q: %w", orig, err)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		if _, err := name.NewRepository(host+"/"+prefix, name.StrictValidation); err != nil {
			return Entry{}, fmt.Errorf("allowlist entry %q: invalid repository prefix %q", orig, prefix)
		}
	}
	return Entry{Host: host, Prefix: prefix}, nil
}

// ParseAll reads every entry.
func ParseAll(entries []string) ([]Entry, error) {
	out := make([]Entry, 0, len(entries))
	for _, s := range entries {
		e, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// Allows reports whether repo on registry matches the entry.
func (a Entry) Allows(registry, repo string) bool {
	if strings.ToLower(registry) != a.Host {
		return false
	}
	return a.Prefix == "" || repo == a.Prefix || strings.HasPrefix(repo, a.Prefix+"/")
}

// Any reports whether any entry allows repo on registry.
func Any(entries []Entry, registry, repo string) bool {
	for _, a := range entries {
		if a.Allows(registry, repo) {
			return true
		}
	}
	return false
}

// CheckHost accepts host[:port] names that image references keep as a
// registry: a host without '.' or ':' (other than localhost) would be read
// as a Docker Hub namespace by every reference parser.
func CheckHost(host string) error {
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil || strings.ContainsAny(host, "/@?#") {
		return fmt.Errorf("invalid registry host %q", host)
	}
	if host != "localhost" && !strings.ContainsAny(host, ".:") {
		return fmt.Errorf("registry host %q has no '.' or ':' and would be read as a Docker Hub namespace", host)
	}
	return nil
}
