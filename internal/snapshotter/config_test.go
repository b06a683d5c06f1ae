package snapshotter

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`
root: /var/lib/cimconv
timeout: 90s
credentials:
  dockerConfig: /etc/cimconv/config.json
registries:
  registry.example.com:
    mirrors: [mirror.local:5000]
    insecure: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Timeout) != 90*time.Second || c.Credentials.DockerConfig != "/etc/cimconv/config.json" ||
		c.Mirrors()["registry.example.com"][0] != "mirror.local:5000" || len(c.InsecureHosts()) != 2 {
		t.Fatalf("parsed %+v", c)
	}
	for _, bad := range []struct{ in, want string }{
		{"timeout: soon", "duration"},
		{"timeout: -1s", "negative"},
		{"tmeout: 1s", "tmeout"},
		{"registries:\n  r.example.com:\n    mirrors: ['']", "empty mirror"},
	} {
		if _, err := ParseConfig([]byte(bad.in)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseConfig(%q) = %v, want an error about %s", bad.in, err, bad.want)
		}
	}
	if c, err := ParseConfig(nil); err != nil || c.Root != "" {
		t.Fatalf("empty config: %+v, %v", c, err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("root: /x\ntimeout: 5m\nregistries:\n  a:\n    mirrors: [b]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err == nil && c.Timeout < 0 {
			t.Fatal("negative timeout accepted")
		}
	})
}
