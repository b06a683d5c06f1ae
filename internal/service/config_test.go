package service

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "serve.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, "listen: 127.0.0.1:9001\nconcurrency: 3\nack-wait: 90s\ninsecure-registry: [a.local, b.local]\nnats-url: nats://file:4222\n")
	tests := []struct {
		name  string
		env   map[string]string
		flags []string
		check func(c Config) string
	}{
		{"defaults", nil, nil, func(c Config) string {
			d := DefaultConfig()
			if !reflect.DeepEqual(c, d) {
				return "not the defaults"
			}
			return ""
		}},
		{"file over default", map[string]string{"CIMCONV_CONFIG": file}, nil, func(c Config) string {
			if c.Listen != "127.0.0.1:9001" || c.Concurrency != 3 || c.AckWait != 90*time.Second ||
				!reflect.DeepEqual(c.InsecureRegistries, []string{"a.local", "b.local"}) || c.MaxDeliver != 5 {
				return "file values not applied"
			}
			return ""
		}},
		{"env over file", map[string]string{"CIMCONV_CONFIG": file, "CIMCONV_CONCURRENCY": "4", "CIMCONV_INSECURE_REGISTRY": "c.local, d.local", "CIMCONV_WEBHOOK_INSECURE_NO_AUTH": "true"}, nil, func(c Config) string {
			if c.Concurrency != 4 || !reflect.DeepEqual(c.InsecureRegistries, []string{"c.local", "d.local"}) || !c.WebhookInsecureNoAuth || c.Listen != "127.0.0.1:9001" {
				return "env values not applied over the file"
			}
			return ""
		}},
		{"flag over env", map[string]string{"CIMCONV_CONFIG": file, "CIMCONV_CONCURRENCY": "4", "CIMCONV_NATS_URL": "nats://env:4222"},
			[]string{"--concurrency=6", "--insecure-registry=e.local", "--insecure-registry=f.local", "--ack-wait=2m"}, func(c Config) string {
				if c.Concurrency != 6 || c.NATSURL != "nats://env:4222" || c.AckWait != 2*time.Minute ||
					!reflect.DeepEqual(c.InsecureRegistries, []string{"e.local", "f.local"}) {
					return "flag values not applied over env"
				}
				return ""
			}},
		{"--config flag over CIMCONV_CONFIG", map[string]string{"CIMCONV_CONFIG": "/nonexistent"}, []string{"--config", file}, func(c Config) string {
			if c.Concurrency != 3 {
				return "--config not used"
			}
			return ""
		}},
		{"unset flag keeps env", map[string]string{"CIMCONV_LISTEN": ":7000"}, []string{"--dev"}, func(c Config) string {
			if c.Listen != ":7000" || !c.Dev {
				return "env lost or flag ignored"
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			RegisterFlags(fs)
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(c); msg != "" {
				t.Errorf("%s: %+v", msg, c)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want []string
	}{
		{"unknown key", "listen: :1\nconcurency: 3\n", nil, []string{`unknown key "concurency"`, "line 2", "serve.yaml"}},
		{"bad type", "concurrency: lots\n", nil, []string{"serve.yaml", "lots"}},
		{"not a mapping", "- a\n- b\n", nil, []string{"mapping"}},
		{"bad env duration", "", map[string]string{"CIMCONV_ACK_WAIT": "soon"}, []string{"CIMCONV_ACK_WAIT", "duration"}},
		{"bad env int", "", map[string]string{"CIMCONV_CONCURRENCY": "two"}, []string{"CIMCONV_CONCURRENCY", "integer"}},
		{"invalid value", "concurrency: 0\n", nil, []string{"concurrency 0"}},
		{"ack wait too short", "ack-wait: 1s\n", nil, []string{"ack-wait"}},
		{"replicas without a cluster", "nats-replicas: 3\n", nil, []string{"nats-replicas 3", "single node"}},
		{"claim ttl too short", "claim-ttl: 100ms\n", nil, []string{"claim-ttl 100ms"}},
		{"settle timeout zero", "settle-timeout: 0s\n", nil, []string{"settle-timeout"}},
		{"unknown hive merge", "", map[string]string{"CIMCONV_HIVE_MERGE": "offreg"}, []string{"hive-merge \"offreg\"", "portable or refuse"}},
		{"bad allowed registry", "", map[string]string{"CIMCONV_ALLOWED_REGISTRIES": "registry.example.com,https://x.example"}, []string{"allowed-registries", "https://x.example", "not a URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"CIMCONV_CONFIG": writeFile(t, tt.file)}
			for k, v := range tt.env {
				env[k] = v
			}
			_, err := LoadConfig(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestEveryKeyHasFlagAndEnv(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	RegisterFlags(fs)
	for _, k := range Keys() {
		if fs.Lookup(k) == nil {
			t.Errorf("key %s has no flag", k)
		}
		if !strings.HasPrefix(EnvName(k), "CIMCONV_") || strings.Contains(EnvName(k), "-") {
			t.Errorf("key %s: env %s", k, EnvName(k))
		}
	}
}

func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("listen: 127.0.0.1:9001\nconcurrency: 3\nack-wait: 90s\ninsecure-registry: [a, b]\n"))
	f.Add([]byte("nats-url: nats://x:4222\ndev: true\n"))
	f.Add([]byte("unknown: 1\n"))
	f.Add([]byte("- a\n"))
	f.Add([]byte("concurrency: {a: b}\n"))
	f.Add([]byte(""))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		p := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(nil, func(k string) (string, bool) {
			if k == "CIMCONV_CONFIG" {
				return p, true
			}
			return "", false
		})
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if c.Validate() != nil {
			t.Fatalf("LoadConfig returned an invalid config: %+v", c)
		}
	})
}

// --dev runs its own NATS: its state starts fresh with the in-memory dev
// registry, which an external server's would not.
func TestDevRefusesExternalNATS(t *testing.T) {
	c := DefaultConfig()
	c.Dev, c.NATSURL = true, "nats://nats.example:4222"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "nats-url") {
		t.Fatalf("err = %v, want a refusal naming nats-url", err)
	}
}
