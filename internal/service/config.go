package service

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/cimconv/cimconv/internal/allowlist"
)

// Config is the configuration of `converter serve`. Every key (yaml tag) is
// also a flag --<key> and an environment variable CIMCONV_<KEY> (upper case,
// '-' as '_'). Precedence: flag > environment > file > default.
type Config struct {
	NATSURL            string        `yaml:"nats-url" help:"NATS server URL; empty: run an embedded NATS server with JetStream under data-dir"`
	NATSCreds          string        `yaml:"nats-creds" help:"NATS credentials file (JWT and seed)"`
	NATSTLSCA          string        `yaml:"nats-tls-ca" help:"CA bundle to verify the NATS server"`
	NATSTLSCert        string        `yaml:"nats-tls-cert" help:"client certificate for NATS"`
	NATSTLSKey         string        `yaml:"nats-tls-key" help:"client key for NATS"`
	NATSReplicas       int           `yaml:"nats-replicas" help:"replicas of the stream and buckets when provisioning on a NATS cluster (embedded: 1)"`
	EmbeddedNATSPort   int           `yaml:"embedded-nats-port" help:"client port of the embedded NATS server (127.0.0.1 only; 0 picks a free port)"`
	Listen             string        `yaml:"listen" help:"HTTP address for /metrics, /healthz, /readyz and /webhooks/"`
	DataDir            string        `yaml:"data-dir" help:"directory for the embedded NATS store and conversion work files"`
	Concurrency        int           `yaml:"concurrency" help:"conversions run at once by this worker"`
	Dev                bool          `yaml:"dev" help:"development mode: embedded NATS, a loopback registry and a sample Windows image; its state (under data-dir/dev) starts fresh at every start"`
	DevRegistry        string        `yaml:"dev-registry" help:"address of the --dev loopback registry (127.0.0.1:0 picks a free port)"`
	InsecureRegistries []string      `yaml:"insecure-registry" help:"registry host allowed over plain HTTP (repeatable)"`
	AckWait            time.Duration `yaml:"ack-wait" help:"time a delivery may go without a heartbeat before it is redelivered"`
	MaxDeliver         int           `yaml:"max-deliver" help:"deliveries of a request before it is dead-lettered"`
	DuplicateWindow    time.Duration `yaml:"duplicate-window" help:"window in which requests with the same idempotency key collapse"`
	ShutdownGrace      time.Duration `yaml:"shutdown-grace" help:"time in-flight conversions get to finish on shutdown before they are NAKed"`
	RetryBackoff       time.Duration `yaml:"retry-backoff" help:"first NAK delay after a transient failure (doubles per attempt, up to 5m)"`
	SettleTimeout      time.Duration `yaml:"settle-timeout" help:"time to store the status, acknowledge and publish the result once a conversion ends (the conversion itself is not bounded)"`
	ClaimTTL           time.Duration `yaml:"claim-ttl" help:"lifetime of a layer build claim without renewal; the live holder renews it every third of it, a dead holder's claim is taken over after about this long"`

	AllowedRegistries    []string `yaml:"allowed-registries" help:"registries (host[:port][/repo-prefix]) requests may make this worker contact; none: any registry except loopback and link-local addresses"`
	AllowLocalRegistries bool     `yaml:"allow-local-registries" help:"with no allowed-registries, also contact loopback and link-local registries (development; implied by --dev)"`

	Role         string `yaml:"role" help:"what this process runs: all, worker (conversions only) or webhook (webhook receiver only)"`
	Builder      string `yaml:"builder" help:"CIM builder: auto, portable (experimental, every OS) or hcsshim (Windows)"`
	CimFormat    string `yaml:"cim-format" help:"CIM format for the hcsshim builder: forked or block"`
	HiveMerge    string `yaml:"hive-merge" help:"delta registry hives on the portable builder: portable (merge in pure Go, never compared with Windows' offreg) or refuse (dead-letter such layers)"`
	SigningKey   string `yaml:"signing-key" help:"PEM private key (PKCS#8, ECDSA P-256/P-384 or Ed25519) that signs every pushed artifact (Sigstore bundle referrer); empty: unsigned"`
	CacheDir     string `yaml:"cache-dir" help:"local chain cache directory (default: data-dir/chains)"`
	WorkDir      string `yaml:"work-dir" help:"directory chains are built in (default: data-dir/work)"`
	DockerConfig string `yaml:"docker-config" help:"dockerconfigjson file with registry credentials (a mounted image pull secret)"`

	WebhookAllowedRegistries []string `yaml:"webhook-allowed-registries" help:"registries (host[:port][/repo-prefix]) webhooks may queue conversions for; none: every event is refused"`
	WebhookTokenFile         string   `yaml:"webhook-token-file" help:"file holding the bearer token every webhook must present"`
	WebhookHMACSecretFile    string   `yaml:"webhook-hmac-secret-file" help:"file holding the HMAC-SHA256 secret webhooks must sign with (X-Cimconv-Signature/-Timestamp)"`
	WebhookInsecureNoAuth    bool     `yaml:"webhook-insecure-no-auth" help:"accept unauthenticated webhooks (loopback development only)"`
}

// DefaultConfig is the configuration without file, environment or flags.
func DefaultConfig() Config {
	return Config{
		NATSReplicas:     1,
		EmbeddedNATSPort: 4222,
		Listen:           "127.0.0.1:8080",
		DevRegistry:      "127.0.0.1:5000",
		DataDir:          defaultDataDir(),
		Concurrency:      2,
		Role:             RoleAll,
		Builder:          "auto",
		CimFormat:        "forked",
		HiveMerge:        "portable",
		AckWait:          2 * time.Minute,
		MaxDeliver:       5,
		DuplicateWindow:  10 * time.Minute,
		ShutdownGrace:    30 * time.Second,
		RetryBackoff:     5 * time.Second,
		SettleTimeout:    30 * time.Second,
		ClaimTTL:         45 * time.Second,
	}
}

func defaultDataDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return d + string(os.PathSeparator) + "cimconv"
	}
	return "cimconv-data"
}

// ConfigFlag is the flag (and CIMCONV_CONFIG the variable) naming the file.
const ConfigFlag = "config"

// EnvName is the environment variable of a config key.
func EnvName(key string) string {
	return "CIMCONV_" + strings.ToUpper(strings.ReplaceAll(key, "-", "_"))
}

type field struct {
	key  string
	help string
	v    reflect.Value
}

func (c *Config) fields() []field {
	rv := reflect.ValueOf(c).Elem()
	rt := rv.Type()
	out := make([]field, 0, rt.NumField())
	for i := range rt.NumField() {
		f := rt.Field(i)
		out = append(out, field{key: f.Tag.Get("yaml"), help: f.Tag.Get("help"), v: rv.Field(i)})
	}
	return out
}

// Keys lists every configuration key.
func Keys() []string {
	var c Config
	var keys []string
	for _, f := range c.fields() {
		keys = append(keys, f.key)
	}
	return keys
}

var durationType = reflect.TypeFor[time.Duration]()

// RegisterFlags adds --config and one flag per key to fs, with the defaults
// shown in help.
func RegisterFlags(fs *pflag.FlagSet) {
	def := DefaultConfig()
	fs.String(ConfigFlag, "", "YAML config file (also "+EnvName(ConfigFlag)+"); every key is also a flag and a CIMCONV_* variable")
	for _, f := range def.fields() {
		help := f.help + " (" + EnvName(f.key) + ")"
		switch {
		case f.v.Type() == durationType:
			fs.Duration(f.key, time.Duration(f.v.Int()), help)
		case f.v.Kind() == reflect.String:
			fs.String(f.key, f.v.String(), help)
		case f.v.Kind() == reflect.Int:
			fs.Int(f.key, int(f.v.Int()), help)
		case f.v.Kind() == reflect.Bool:
			fs.Bool(f.key, f.v.Bool(), help)
		case f.v.Kind() == reflect.Slice:
			fs.StringSlice(f.key, nil, help+"; repeatable, comma-separated in the variable")
		}
	}
}

// LoadConfig builds the configuration from defaults, the file named by
// --config or CIMCONV_CONFIG, the environment (lookup, normally
// os.LookupEnv) and the flags the user set in fs. fs may be nil.
func LoadConfig(fs *pflag.FlagSet, lookup func(string) (string, bool)) (Config, error) {
	cfg := DefaultConfig()
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	file, _ := lookup(EnvName(ConfigFlag))
	if fs != nil {
		if f := fs.Lookup(ConfigFlag); f != nil && f.Changed {
			file = f.Value.String()
		}
	}
	if file != "" {
		if err := cfg.loadFile(file); err != nil {
			return cfg, err
		}
	}
	for _, f := range cfg.fields() {
		if s, ok := lookup(EnvName(f.key)); ok {
			if err := setString(f.v, s); err != nil {
				return cfg, fmt.Errorf("%s=%q: %w", EnvName(f.key), s, err)
			}
		}
	}
	if fs != nil {
		for _, f := range cfg.fields() {
			fl := fs.Lookup(f.key)
			if fl == nil || !fl.Changed {
				continue
			}
			if sv, ok := fl.Value.(pflag.SliceValue); ok {
				f.v.Set(reflect.ValueOf(append([]string(nil), sv.GetSlice()...)))
				continue
			}
			if err := setString(f.v, fl.Value.String()); err != nil {
				return cfg, fmt.Errorf("--%s=%q: %w", f.key, fl.Value.String(), err)
			}
		}
	}
	return cfg, cfg.Validate()
}

func (c *Config) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	// Check keys first for a one-line error naming the unknown key.
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config %s: %s", path, oneLine(err))
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config %s: want a mapping of keys to values at the top level", path)
	}
	known := map[string]bool{}
	for _, k := range Keys() {
		known[k] = true
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k := root.Content[i]
		if !known[k.Value] {
			return fmt.Errorf("config %s: line %d: unknown key %q (known: %s)", path, k.Line, k.Value, strings.Join(sortedKeys(), ", "))
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config %s: %s", path, oneLine(err))
	}
	return nil
}

func sortedKeys() []string {
	k := Keys()
	sort.Strings(k)
	return k
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "yaml: unmarshal errors:", "")), " ")
}

func setString(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("not a duration (e.g. 30s, 5m)")
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return errors.New("not an integer")
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("not a boolean (true or false)")
		}
		v.SetBool(b)
	case v.Kind() == reflect.Slice:
		var out []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		v.Set(reflect.ValueOf(out))
	default:
		return fmt.Errorf("unsupported config type %s", v.Type())
	}
	return nil
}

// Validate checks values that would fail later in a less clear way.
func (c *Config) Validate() error {
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency)
	case c.Listen == "":
		return errors.New("listen: empty address")
	case c.NATSURL == "" && c.DataDir == "":
		return errors.New("data-dir: required for the embedded NATS server (or set nats-url)")
	case c.NATSReplicas < 1 || c.NATSReplicas > 5:
		return fmt.Errorf("nats-replicas %d: want 1 to 5", c.NATSReplicas)
	case c.NATSURL == "" && c.NATSReplicas != 1:
		return fmt.Errorf("nats-replicas %d: the embedded NATS server is a single node (want 1, or set nats-url)", c.NATSReplicas)
	case c.MaxDeliver < 1:
		return fmt.Errorf("max-deliver %d: must be at least 1", c.MaxDeliver)
	case c.AckWait < 3*time.Second:
		return fmt.Errorf("ack-wait %v: must be at least 3s (heartbeats run at a quarter of it)", c.AckWait)
	case c.ShutdownGrace < 0 || c.DuplicateWindow < 0 || c.RetryBackoff < 0:
		return errors.New("durations must not be negative")
	case c.SettleTimeout <= 0:
		return fmt.Errorf("settle-timeout %v: must be positive", c.SettleTimeout)
	case c.ClaimTTL < time.Second:
		return fmt.Errorf("claim-ttl %v: must be at least 1s (renewals run at a third of it)", c.ClaimTTL)
	case c.EmbeddedNATSPort < 0 || c.EmbeddedNATSPort > 65535:
		return fmt.Errorf("embedded-nats-port %d: out of range", c.EmbeddedNATSPort)
	case c.HiveMerge != "portable" && c.HiveMerge != "refuse":
		return fmt.Errorf("hive-merge %q: want portable or refuse", c.HiveMerge)
	case c.Role != RoleAll && c.Role != RoleWorker && c.Role != RoleWebhook:
		return fmt.Errorf("role %q: want all, worker or webhook", c.Role)
	case c.Dev && c.NATSURL != "":
		return errors.New("dev: runs its own embedded NATS server (its state starts fresh with the in-memory dev registry's); drop nats-url")
	case c.Dev && c.Role != RoleAll:
		return fmt.Errorf("dev: runs everything in one process (role all), not role %q", c.Role)
	}
	if _, err := allowlist.ParseAll(c.AllowedRegistries); err != nil {
		return fmt.Errorf("allowed-registries: %w", err)
	}
	return nil
}

// Roles of a serve process.
const (
	RoleAll     = "all"     // worker and webhook receiver
	RoleWorker  = "worker"  // conversions only (Windows worker pods)
	RoleWebhook = "webhook" // webhook receiver only (small Linux pods)
)
