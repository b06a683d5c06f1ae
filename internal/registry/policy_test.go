package registry

import (
	"testing"
)

func TestParseOSVersionPolicy(t *testing.T) {
	tests := []struct {
		in      string
		want    OSVersionPolicy
		wantErr bool
	}{
		{"all", OSVersionPolicy{Mode: OSVersionAll}, false},
		{"", OSVersionPolicy{Mode: OSVersionAll}, false},
		{"10.0.20348.2031", OSVersionPolicy{Mode: OSVersionExact, Version: "10.0.20348.2031"}, false},
		{"20348", OSVersionPolicy{Mode: OSVersionExact, Version: "20348"}, false},
		{"exact:17763", OSVersionPolicy{Mode: OSVersionExact, Version: "17763"}, false},
		{"compatible:20348", OSVersionPolicy{Mode: OSVersionCompatible, Version: "20348"}, false},
		{"compatible:10.0.26100.1", OSVersionPolicy{Mode: OSVersionCompatible, Version: "10.0.26100.1"}, false},
		{"compatible:", OSVersionPolicy{}, true},
		{"compatible:ltsc2022", OSVersionPolicy{}, true},
		{"10.0", OSVersionPolicy{}, true},
		{"10.0.20348.2031.5", OSVersionPolicy{}, true},
		{"+20348", OSVersionPolicy{}, true},
		{"-1", OSVersionPolicy{}, true},
		{"newest", OSVersionPolicy{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseOSVersionPolicy(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseOSVersionPolicy(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ParseOSVersionPolicy(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if err == nil {
				again, err := ParseOSVersionPolicy(got.String())
				if err != nil || again != got {
					t.Fatalf("round trip via %q = %+v, %v", got.String(), again, err)
				}
			}
		})
	}
}

func TestOSVersionPolicyMatch(t *testing.T) {
	tests := []struct {
		policy string
		image  string
		want   bool
	}{
		{"all", "10.0.17763.1", true},
		{"all", "", true},
		{"10.0.20348.2031", "10.0.20348.2031", true},
		{"10.0.20348.2031", "10.0.20348.2032", false},
		{"10.0.20348", "10.0.20348.9", true},
		{"20348", "10.0.20348.1", true},
		{"20348", "10.0.17763.1", false},
		{"20348", "", false},
		{"20348", "garbage", false},
		// Hosts below 20348: exact build only.
		{"compatible:17763", "10.0.17763.5000", true},
		{"compatible:17763", "10.0.17134.1", false},
		{"compatible:19041", "10.0.17763.1", false},
		// Host 20348 (LTSC 2022): 20348 only.
		{"compatible:20348", "10.0.20348.1", true},
		{"compatible:20348", "10.0.17763.1", false},
		// Windows 11 / 23H2 hosts: 20348 up to host build.
		{"compatible:22621", "10.0.20348.1", true},
		{"compatible:22621", "10.0.22000.1", true},
		{"compatible:22621", "10.0.25398.1", false},
		// Host 26100 (LTSC 2025): previous LTSC 20348 .. 26100.
		{"compatible:26100", "10.0.20348.2031", true},
		{"compatible:26100", "10.0.26100.100", true},
		{"compatible:26100", "10.0.17763.1", false},
		// Above 26100: previous LTSC is 26100.
		{"compatible:26200", "10.0.26100.1", true},
		{"compatible:26200", "10.0.20348.1", false},
		{"compatible:26200", "10.0.26300.1", false},
		// Different major.minor never matches.
		{"compatible:10.0.26100", "6.3.26100.1", false},
		{"compatible:20348", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.policy+"/"+tt.image, func(t *testing.T) {
			p, err := ParseOSVersionPolicy(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Match(tt.image); got != tt.want {
				t.Fatalf("%s.Match(%q) = %v, want %v", tt.policy, tt.image, got, tt.want)
			}
		})
	}
}

func FuzzParseOSVersionPolicy(f *testing.F) {
	for _, s := range []string{"all", "20348", "10.0.20348.2031", "compatible:26100", "exact:1", "compatible:10.0.1.2", "...", "compatible:"} {
		f.Add(s, "10.0.20348.2031")
	}
	f.Fuzz(func(t *testing.T, policy, image string) {
		p, err := ParseOSVersionPolicy(policy)
		if err != nil {
			return
		}
		_ = p.Match(image)
		again, err := ParseOSVersionPolicy(p.String())
		if err != nil || again != p {
			t.Fatalf("%q parsed to %+v; its String %q parses to %+v, %v", policy, p, p.String(), again, err)
		}
	})
}
