package worker

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/queue"
)

func TestRegistryPolicy(t *testing.T) {
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "rebind.example":
			return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
		case "metadata.example":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		case "v6local.example":
			return []netip.Addr{netip.MustParseAddr("fe80::1")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil
	}
	tests := []struct {
		name    string
		allowed []string
		opts    []PolicyOption
		image   string
		refused string // substring of the error; "" when allowed
	}{
		{"no list: public registry", nil, nil, "registry.example.com/app:1", ""},
		{"no list: loopback literal", nil, nil, "127.0.0.1:5000/app:1", "127.0.0.1"},
		{"no list: localhost", nil, nil, "localhost:5000/app:1", "loopback"},
		{"no list: IPv6 loopback", nil, nil, "[::1]:5000/app:1", "::1"},
		{"no list: link-local metadata address", nil, nil, "169.254.169.254/x:1", "link-local"},
		{"no list: name resolving to loopback", nil, nil, "rebind.example/app:1", "127.0.0.2"},
		{"no list: name resolving to link-local", nil, nil, "metadata.example/app:1", "169.254.169.254"},
		{"no list: name resolving to IPv6 link-local", nil, nil, "v6local.example/app:1", "fe80::1"},
		{"no list, local allowed (dev)", nil, []PolicyOption{AllowLocal(true)}, "127.0.0.1:5000/app:1", ""},
		{"no list, host named explicitly", nil, []PolicyOption{AllowHosts("127.0.0.1:5000")}, "127.0.0.1:5000/app:1", ""},
		{"no list, other port not named", nil, []PolicyOption{AllowHosts("127.0.0.1:5000")}, "127.0.0.1:5001/app:1", "127.0.0.1"},
		{"list: listed registry", []string{"registry.example.com"}, nil, "registry.example.com/app:1", ""},
		{"list: other registry", []string{"registry.example.com"}, nil, "other.example.com/app:1", "not on this worker's allowed-registries"},
		{"list: prefix", []string{"registry.example.com/windows"}, nil, "registry.example.com/windows/servercore:1", ""},
		{"list: outside the prefix", []string{"registry.example.com/windows"}, nil, "registry.example.com/linux/app:1", "allowed-registries"},
		{"list: a listed loopback registry", []string{"127.0.0.1:5000"}, nil, "127.0.0.1:5000/app:1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewRegistryPolicy(tt.allowed, append([]PolicyOption{WithResolver(resolve)}, tt.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Check(context.Background(), tt.image)
			if tt.refused == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.refused) || !errors.Is(err, ErrRegistryNotAllowed) || !IsPermanent(err) {
				t.Fatalf("err = %v, want a permanent ErrRegistryNotAllowed naming %q", err, tt.refused)
			}
		})
	}
	if _, err := NewRegistryPolicy([]string{"https://registry.example.com"}); err == nil || !strings.Contains(err.Error(), "allowed-registries") {
		t.Errorf("bad entry: err = %v", err)
	}
}

// The adapter checks the policy before touching the network: a refused
// request is a permanent failure (dead-lettered at once).
func TestAdapterRefusesDisallowedRegistry(t *testing.T) {
	p, err := NewRegistryPolicy([]string{"registry.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	a := NewConvertAdapter(nil, nil, nil, WithRegistryPolicy(p))
	_, err = a.Convert(context.Background(), queueRequest("evil.example.net/app:1"), func(string) {})
	if !errors.Is(err, ErrRegistryNotAllowed) || !IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
}

func queueRequest(image string) queue.Request { return queue.Request{Image: image} }
