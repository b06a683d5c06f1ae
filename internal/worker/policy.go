package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/cimconv/cimconv/internal/allowlist"
	"github.com/cimconv/cimconv/internal/registry"
)

// ErrRegistryNotAllowed is wrapped by the (permanent) error of a request
// for a registry this worker may not contact.
var ErrRegistryNotAllowed = errors.New("registry not allowed")

// RegistryPolicy says which registries a request may make this worker
// contact: anyone who can publish to the stream names a host, and the
// worker's network position must not be lent to them.
//
// With an allowlist, only listed registries (host[:port][/repo-prefix]) are
// contacted, loopback ones included. Without one, any registry is, except
// loopback, link-local and unspecified addresses (by literal or by DNS),
// unless local registries are allowed (development) or the host is named
// explicitly (AllowHosts, e.g. the insecure-registry list).
type RegistryPolicy struct {
	allow      []allowlist.Entry
	allowLocal bool
	hosts      map[string]bool
	lookup     func(ctx context.Context, host string) ([]netip.Addr, error)
}

// PolicyOption configures NewRegistryPolicy.
type PolicyOption func(*RegistryPolicy)

// AllowLocal allows loopback and link-local registries without an allowlist.
func AllowLocal(ok bool) PolicyOption { return func(p *RegistryPolicy) { p.allowLocal = ok } }

// AllowHosts names host[:port]s allowed even when local.
func AllowHosts(hosts ...string) PolicyOption {
	return func(p *RegistryPolicy) {
		for _, h := range hosts {
			p.hosts[strings.ToLower(strings.TrimSpace(h))] = true
		}
	}
}

// WithResolver replaces DNS resolution (tests).
func WithResolver(f func(ctx context.Context, host string) ([]netip.Addr, error)) PolicyOption {
	return func(p *RegistryPolicy) { p.lookup = f }
}

// NewRegistryPolicy parses the allowlist entries.
func NewRegistryPolicy(allowed []string, opts ...PolicyOption) (*RegistryPolicy, error) {
	entries, err := allowlist.ParseAll(allowed)
	if err != nil {
		return nil, fmt.Errorf("allowed-registries: %w", err)
	}
	p := &RegistryPolicy{allow: entries, hosts: map[string]bool{}, lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Check returns a permanent error wrapping ErrRegistryNotAllowed when image
// names a registry the policy refuses. A nil policy allows everything.
func (p *RegistryPolicy) Check(ctx context.Context, image string) error {
	if p == nil {
		return nil
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		return Permanent(fmt.Errorf("image %q: %w", image, err))
	}
	reg, repo := ref.Context().RegistryStr(), ref.Context().RepositoryStr()
	if len(p.allow) > 0 {
		if !allowlist.Any(p.allow, reg, repo) {
			return Permanent(fmt.Errorf("%s/%s: %w: not on this worker's allowed-registries", reg, repo, ErrRegistryNotAllowed))
		}
		return nil
	}
	if p.allowLocal || p.hosts[strings.ToLower(reg)] {
		return nil
	}
	host := reg
	if h, _, err := net.SplitHostPort(reg); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	} else if addrs, err = p.lookup(ctx, host); err != nil {
		return nil // unresolvable: the registry client reports it
	}
	for _, a := range addrs {
		a = a.Unmap()
		if refusedAddr(a) {
			return Permanent(fmt.Errorf("%s: %w: %s is a loopback or link-local address (set allowed-registries to list it, or allow-local-registries / --dev for development)",
				reg, ErrRegistryNotAllowed, a))
		}
	}
	return nil
}

// refusedAddr: loopback, link-local (the cloud metadata endpoint among
// them) and unspecified addresses.
func refusedAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified()
}

// DialGuard is the policy applied to every connection the registry client
// makes (registry.WithDialGuard), on the address it dials: Check sees the
// registry the request names, not where that registry redirects, its token
// realm or upload locations, nor what DNS answers at the moment of the
// connection. A loopback, link-local or unspecified address is refused
// unless local registries are allowed or its host[:port] is one the
// operator named (AllowHosts, or an allowed-registries entry). Nil (no
// guard) for a nil policy or when local registries are allowed.
func (p *RegistryPolicy) DialGuard() registry.DialGuard {
	if p == nil || p.allowLocal {
		return nil
	}
	return func(_ context.Context, hostport string, a netip.Addr) error {
		if !refusedAddr(a) || p.named(hostport) {
			return nil
		}
		return fmt.Errorf("%w: %s is a loopback or link-local address (list %s in allowed-registries or insecure-registry, or allow-local-registries / --dev for development)",
			ErrRegistryNotAllowed, a, hostport)
	}
}

// named reports whether hostport is one the operator named in AllowHosts or
// an allowed-registries entry: the same host and port, or the same host
// where the name gives no port.
func (p *RegistryPolicy) named(hostport string) bool {
	hostport = strings.ToLower(hostport)
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	matches := func(n string) bool {
		if n == hostport {
			return true
		}
		if _, _, err := net.SplitHostPort(n); err == nil {
			return false // a port is named: only that one
		}
		return strings.Trim(n, "[]") == strings.Trim(host, "[]")
	}
	for h := range p.hosts {
		if matches(h) {
			return true
		}
	}
	for _, e := range p.allow {
		if matches(e.Host) {
			return true
		}
	}
	return false
}
