package snapshotter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is `converter snapshotter`'s configuration file (YAML). Flags
// override the file.
//
//	root: C:\ProgramData\cimconv\snapshotter
//	address: \\.\pipe\cimconv-snapshotter
//	listen: 127.0.0.1:9820          # metrics
//	nodeBuild: 10.0.20348.2340      # default: any
//	timeout: 5m                     # lookup+download per layer; past it the layer is imported
//	trustedKeys:                    # the workers' public signing keys (PEM)
//	- C:\ProgramData\cimconv\cimconv.pub
//	trustUnsigned: false            # DEVELOPMENT ONLY
//	credentials:
//	  dockerConfig: C:\ProgramData\cimconv\config.json   # default: anonymous
//	registries:
//	  registry.example.com:
//	    mirrors: [mirror.example.net:5000]
//	    insecure: false
type Config struct {
	Root          string                    `yaml:"root"`
	Address       string                    `yaml:"address"`
	Listen        string                    `yaml:"listen"`
	NodeBuild     string                    `yaml:"nodeBuild"`
	Timeout       Duration                  `yaml:"timeout"`
	TrustedKeys   []string                  `yaml:"trustedKeys"`
	TrustUnsigned bool                      `yaml:"trustUnsigned"`
	Credentials   Credentials               `yaml:"credentials"`
	Registries    map[string]RegistryConfig `yaml:"registries"`
}

// Credentials says where registry credentials come from. Empty: anonymous.
type Credentials struct {
	// DockerConfig is a docker config.json / dockerconfigjson file.
	DockerConfig string `yaml:"dockerConfig"`
}

// RegistryConfig is per-registry (host[:port]) configuration.
type RegistryConfig struct {
	// Mirrors are tried, in order, before the registry itself.
	Mirrors []string `yaml:"mirrors"`
	// Insecure allows plain HTTP to the registry and its mirrors.
	Insecure bool `yaml:"insecure"`
}

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// ParseConfig reads a configuration. Unknown keys are errors.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadConfig reads the configuration file at path.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("snapshotter config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("snapshotter config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks values that cannot work.
func (c *Config) Validate() error {
	if c.TrustUnsigned && len(c.TrustedKeys) > 0 {
		return errors.New("trustedKeys and trustUnsigned exclude each other")
	}
	for _, k := range c.TrustedKeys {
		if k == "" {
			return errors.New("trustedKeys: empty path")
		}
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout %v is negative", time.Duration(c.Timeout))
	}
	for host, r := range c.Registries {
		if host == "" {
			return errors.New("registries: empty host")
		}
		for _, m := range r.Mirrors {
			if m == "" {
				return fmt.Errorf("registries.%s.mirrors: empty mirror", host)
			}
		}
	}
	return nil
}

// Mirrors returns the mirror map for WithMirrors.
func (c *Config) Mirrors() map[string][]string {
	m := map[string][]string{}
	for host, r := range c.Registries {
		if len(r.Mirrors) > 0 {
			m[host] = r.Mirrors
		}
	}
	return m
}

// InsecureHosts lists registries and mirrors reached over plain HTTP.
func (c *Config) InsecureHosts() []string {
	var out []string
	for host, r := range c.Registries {
		if r.Insecure {
			out = append(out, host)
			out = append(out, r.Mirrors...)
		}
	}
	return out
}
