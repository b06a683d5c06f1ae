package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// ErrDialRefused is wrapped by the (permanent) error of a connection the
// client's dial guard refused.
var ErrDialRefused = errors.New("connection refused by the registry policy")

// DialGuard decides whether the client may connect to addr, an address the
// host of hostport (host:port) resolved to (or that host itself, a literal),
// for any request: the registry's
// own, a redirect, a token realm, an upload location, a pagination link.
// A non-nil error refuses the connection.
type DialGuard func(ctx context.Context, hostport string, addr netip.Addr) error

// WithDialGuard checks every connection the client makes with g, at the
// moment it is made, on the addresses actually dialled: a check of the
// image's registry name before the conversion sees neither redirects nor
// token realms, nor DNS that answers otherwise the second time. Proxies
// (HTTPS_PROXY, ...) are the operator's and are not checked.
func WithDialGuard(g DialGuard) Option { return func(c *Client) { c.dialGuard = g } }

// guardDials makes t dial only addresses guard allows, resolving names once
// and dialling the checked addresses themselves.
func guardDials(t *http.Transport, guard DialGuard, lookup func(ctx context.Context, host string) ([]netip.Addr, error)) {
	var proxies sync.Map // host:port of the proxies the transport was given
	if proxy := t.Proxy; proxy != nil {
		t.Proxy = func(r *http.Request) (*url.URL, error) {
			u, err := proxy(r)
			if u != nil {
				proxies.Store(canonicalAddr(u), true)
			}
			return u, err
		}
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
		if _, ok := proxies.Load(address); ok {
			return d.DialContext(ctx, network, address)
		}
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = []netip.Addr{a}
		} else if addrs, err = lookup(ctx, host); err != nil {
			return nil, err
		}
		// Every address must pass, not only the one dialled first: the
		// dialler falls back to the next on failure.
		for _, a := range addrs {
			if err := guard(ctx, address, a.Unmap()); err != nil {
				return nil, errdefs.Permanent(fmt.Errorf("%w: %s (%s): %w", ErrDialRefused, address, a.Unmap(), err))
			}
		}
		var first error
		for _, a := range addrs {
			conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
			if err == nil {
				return conn, nil
			}
			if first == nil {
				first = err
			}
		}
		if first == nil {
			first = fmt.Errorf("%s: no address", host)
		}
		return nil, first
	}
}

// canonicalAddr is u's host:port with the scheme's default port.
func canonicalAddr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
