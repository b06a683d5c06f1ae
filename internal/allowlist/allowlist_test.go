package allowlist

import (
	"strings"
	"testing"
)

func TestParseAndAllows(t *testing.T) {
	tests := []struct {
		entry, registry, repo string
		want                  bool
		err                   string
	}{
		{entry: "registry.example.com", registry: "registry.example.com", repo: "any/thing", want: true},
		{entry: "Registry.Example.com:5000/apps", registry: "registry.example.com:5000", repo: "apps/web", want: true},
		{entry: "registry.example.com:5000/apps", registry: "registry.example.com:5000", repo: "apps", want: true},
		{entry: "registry.example.com:5000/apps", registry: "registry.example.com:5000", repo: "appsx/web", want: false},
		{entry: "registry.example.com:5000/apps", registry: "registry.example.com", repo: "apps/web", want: false},
		{entry: "127.0.0.1:5000", registry: "127.0.0.1:5000", repo: "x", want: true},
		{entry: "https://registry.example.com", err: "not a URL"},
		{entry: "nodots", err: "Docker Hub namespace"},
		{entry: "  ", err: "empty"},
		{entry: "registry.example.com/UPPER", err: "invalid repository prefix"},
	}
	for _, tt := range tests {
		e, err := Parse(tt.entry)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), tt.entry) {
				t.Errorf("Parse(%q) err = %v, want %q naming the entry", tt.entry, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.entry, err)
		}
		if got := e.Allows(tt.registry, tt.repo); got != tt.want {
			t.Errorf("%q allows %s/%s = %v, want %v", tt.entry, tt.registry, tt.repo, got, tt.want)
		}
		if got := Any([]Entry{e}, tt.registry, tt.repo); got != tt.want {
			t.Errorf("Any: %v, want %v", got, tt.want)
		}
	}
	if _, err := ParseAll([]string{"a.example", "bad"}); err == nil {
		t.Error("ParseAll accepted a bad entry")
	}
}
