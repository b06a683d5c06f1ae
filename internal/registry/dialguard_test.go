package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// refuseLoopback is a guard that refuses loopback addresses.
func refuseLoopback(_ context.Context, hostport string, a netip.Addr) error {
	if a.IsLoopback() {
		return fmt.Errorf("%s: loopback", hostport)
	}
	return nil
}

// The guard sees every address a name resolves to, mapped forms unmapped,
// and refuses the connection if any is refused (the dialler would fall back
// to it); a proxy the transport was given is the operator's and is dialled
// unchecked.
func TestGuardDials(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "via proxy") }))
	defer proxy.Close()
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "mixed.example":
			return []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("127.0.0.1")}, nil
		case "mapped.example":
			return []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}, nil
		}
		return nil, fmt.Errorf("no such host %s", host)
	}
	for _, tc := range []struct {
		name, url string
		proxy     bool
		refused   bool
	}{
		{"a name with one refused address", "http://mixed.example/v2/", false, true},
		{"an IPv4-mapped loopback address", "http://mapped.example/v2/", false, true},
		{"a loopback literal", proxy.URL + "/v2/", false, true},
		{"through the operator's proxy", "http://mixed.example/v2/", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.Proxy = nil
			if tc.proxy {
				pu, _ := url.Parse(proxy.URL)
				tr.Proxy = http.ProxyURL(pu)
			}
			guardDials(tr, refuseLoopback, lookup)
			resp, err := (&http.Client{Transport: tr}).Get(tc.url)
			if !tc.refused {
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "via proxy" {
					t.Fatalf("body %q, want the proxy's answer", b)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatal("connected; want the guard's refusal")
			}
			if !errors.Is(err, ErrDialRefused) || errdefs.Classify(err) != errdefs.RetryCannotHelp {
				t.Fatalf("err = %v; want a permanent ErrDialRefused", err)
			}
		})
	}
}
