package chart_test

// The chart's settings checked against the converter itself: the real
// `converter serve` command (built once per test run) for flags and the
// variables of its root command, and internal/service's own loader for the
// resulting configuration. Nothing here lists the converter's flags or
// variables by hand.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/cimconv/cimconv/internal/exe"
	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/service"
)

var converter struct {
	once sync.Once
	dir  string
	path string
	err  error

	mu       sync.Mutex
	baseHelp string
	reads    map[string]bool // CIMCONV_* variable -> read by the root command
}

func TestMain(m *testing.M) {
	code := m.Run()
	if converter.dir != "" {
		os.RemoveAll(converter.dir)
	}
	os.Exit(code)
}

// converterBinary builds ./cmd/converter once (CGO_ENABLED=0, as the Linux
// Dockerfile does).
func converterBinary(t *testing.T) string {
	t.Helper()
	converter.once.Do(func() {
		dir, err := os.MkdirTemp("", "cimconv-chart-test-")
		if err != nil {
			converter.err = err
			return
		}
		converter.dir = dir
		// The platform's name: on Windows os/exec finds converter.exe only.
		converter.path = exe.Path(dir, "converter")
		cmd := exec.Command("go", "build", "-o", converter.path, "github.com/cimconv/cimconv/cmd/converter")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			converter.err = fmt.Errorf("go build ./cmd/converter: %w\n%s", err, out)
		}
	})
	if converter.err != nil {
		t.Fatal(converter.err)
	}
	return converter.path
}

// cleanEnv is the test's environment without CIMCONV_* variables.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CIMCONV_") {
			env = append(env, e)
		}
	}
	return env
}

// runConverter runs the converter with args and extra environment.
func runConverter(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(converterBinary(t), args...)
	cmd.Env = append(cleanEnv(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// knownEnv reports whether `converter serve` reads the variable: it is
// CIMCONV_<KEY> of a serve config key or CIMCONV_CONFIG (internal/service),
// or a variable the root command reads for a global flag's default, which
// `converter serve --help` then shows as that flag's default.
func knownEnv(t *testing.T, name string) bool {
	t.Helper()
	if name == service.EnvName(service.ConfigFlag) {
		return true
	}
	for _, k := range serveConfigKeys {
		if name == service.EnvName(k) {
			return true
		}
	}
	if !strings.HasPrefix(name, "CIMCONV_") {
		return false
	}
	converter.mu.Lock()
	defer converter.mu.Unlock()
	if r, ok := converter.reads[name]; ok {
		return r
	}
	if converter.baseHelp == "" {
		out, err := runConverter(t, nil, "serve", "--help")
		if err != nil {
			t.Fatalf("converter serve --help: %v\n%s", err, out)
		}
		converter.baseHelp = out
	}
	const probe = "chart-test-probe-value"
	out, err := runConverter(t, []string{name + "=" + probe}, "serve", "--help")
	if err != nil {
		t.Fatalf("%s=%s converter serve --help: %v\n%s", name, probe, err, out)
	}
	r := out != converter.baseHelp && strings.Contains(out, probe)
	if converter.reads == nil {
		converter.reads = map[string]bool{}
	}
	converter.reads[name] = r
	return r
}

// checkEnvKnown: every variable the chart sets on c (user extraEnv aside) is
// one the converter reads, with a literal value (secrets reach the converter
// as files, never through the environment).
func checkEnvKnown(t *testing.T, c *corev1.Container, v values, extraPath string) {
	t.Helper()
	for _, e := range c.Env {
		if isExtraEnv(v, extraPath, e.Name) {
			continue
		}
		if !knownEnv(t, e.Name) {
			t.Errorf("%s sets %s, which the converter does not read", c.Name, e.Name)
		}
		if e.ValueFrom != nil {
			t.Errorf("%s: %s comes from %+v; the chart passes secrets as mounted files", c.Name, e.Name, e.ValueFrom)
		}
	}
}

// checkServeCommand runs the container's arguments, with --help appended,
// through the real cobra command: an unknown flag or a malformed value fails
// there exactly as it would in the pod.
func checkServeCommand(t *testing.T, c *corev1.Container) {
	t.Helper()
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Errorf("%s args %q: want `serve` first", c.Name, c.Args)
		return
	}
	var env []string
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "CIMCONV_") && e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	if out, err := runConverter(t, env, append(slices.Clone(c.Args), "--help")...); err != nil {
		t.Errorf("%s: converter %s --help: %v\n%s", c.Name, strings.Join(c.Args, " "), err, out)
	}
}

// podFiles materialises the ConfigMap and Secret-item volumes c mounts under
// a temp dir: ConfigMap files as rendered, each Secret item as a file holding
// "<secret>/<key>". rewrite maps a path inside one of those mounts to the
// temp copy and leaves any other path as the container sees it.
type podFiles struct {
	mounts map[string]string // container mount path -> local dir
}

func newPodFiles(t *testing.T, r *rendered, spec *corev1.PodSpec, c *corev1.Container) *podFiles {
	t.Helper()
	pf := &podFiles{mounts: map[string]string{}}
	root := t.TempDir()
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Errorf("%s mounts volume %q, which the pod does not declare", c.Name, m.Name)
			continue
		}
		vol := spec.Volumes[i]
		dir := filepath.Join(root, m.Name)
		files := map[string]string{}
		switch {
		case vol.ConfigMap != nil:
			cm := r.configMaps[vol.ConfigMap.Name]
			if cm == nil {
				t.Errorf("%s: volume %q names ConfigMap %q, which the chart does not render", c.Name, m.Name, vol.ConfigMap.Name)
				continue
			}
			for k, val := range cm.Data {
				files[k] = val
			}
		case vol.Secret != nil && len(vol.Secret.Items) > 0:
			for _, it := range vol.Secret.Items {
				files[it.Path] = vol.Secret.SecretName + "/" + it.Key
			}
		default:
			continue // emptyDir, hostPath, a whole Secret: nothing to read here
		}
		for name, content := range files {
			p := filepath.Join(dir, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		pf.mounts[m.MountPath] = dir
	}
	return pf
}

func (pf *podFiles) rewrite(p string) string {
	for mount, dir := range pf.mounts {
		for _, sep := range []string{"/", `\`} {
			if rest, ok := strings.CutPrefix(p, mount+sep); ok {
				return filepath.Join(dir, filepath.FromSlash(strings.ReplaceAll(rest, `\`, "/")))
			}
		}
	}
	return p
}

// loadServeConfig runs the container's flags and CIMCONV_* variables through
// internal/service's flag set and loader (the code `converter serve` runs),
// with file paths into the materialised volumes rewritten. Global flags are
// not part of that flag set: the chart passes them as variables.
func loadServeConfig(t *testing.T, r *rendered, spec *corev1.PodSpec, c *corev1.Container) (service.Config, bool) {
	t.Helper()
	pf := newPodFiles(t, r, spec, c)
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	service.RegisterFlags(fs)
	var args []string
	for _, a := range c.Args[1:] {
		if k, val, ok := strings.Cut(a, "="); ok {
			a = k + "=" + pf.rewrite(val)
		}
		args = append(args, a)
	}
	if err := fs.Parse(args); err != nil {
		t.Errorf("%s: serve flags %q: %v", c.Name, c.Args[1:], err)
		return service.Config{}, false
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = pf.rewrite(e.Value)
		}
	}
	cfg, err := service.LoadConfig(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Errorf("%s: converter serve would refuse its configuration: %v", c.Name, err)
		return cfg, false
	}
	return cfg, true
}

// secretFile fails unless path is a materialised item of Secret secret, key key.
func secretFile(t *testing.T, what, path, secret, key string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s %q: not a file of a mounted Secret item: %v", what, path, err)
		return
	}
	if got, want := string(b), secret+"/"+key; got != want {
		t.Errorf("%s reads Secret item %s, want %s", what, got, want)
	}
}

// checkWebhookAuth builds the /webhooks/ handler the way serve does
// (service.ConfigWebhooks from the loaded config and the mounted files) and
// sends it push events: unauthenticated ones must be refused, authenticated
// ones for an allowed registry queued.
func checkWebhookAuth(t *testing.T, cfg service.Config, token, hmacSecret string, allowed []string) {
	t.Helper()
	hooks, err := service.ConfigWebhooks(cfg, nil)
	if err != nil {
		t.Errorf("webhook config: %v", err)
		return
	}
	var queued []string
	h, err := hooks(func(_ context.Context, req queue.Request) (bool, error) {
		queued = append(queued, req.Image)
		return false, nil
	}, metrics.New(nil))
	if err != nil {
		t.Errorf("webhook handler: %v", err)
		return
	}
	host, prefix, _ := strings.Cut(allowed[0], "/")
	repo := strings.Trim(prefix+"/app", "/")
	digest := "sha256:" + strings.Repeat("ab", 32)
	send := func(id string, signed bool) int {
		body := fmt.Sprintf(`{"events":[{"id":%q,"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":%q,"url":"https://%s/v2/%s/manifests/%s","tag":"v1"},"request":{"host":%q}}]}`,
			id, digest, repo, host, repo, digest, host)
		req := httptest.NewRequest(http.MethodPost, "/webhooks/distribution", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/vnd.docker.distribution.events.v1+json")
		if signed {
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			if hmacSecret != "" {
				ts := strconv.FormatInt(time.Now().Unix(), 10)
				mac := hmac.New(sha256.New, []byte(hmacSecret))
				mac.Write([]byte(ts + "." + body))
				req.Header.Set("X-Cimconv-Timestamp", ts)
				req.Header.Set("X-Cimconv-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	if code := send("unsigned", false); code != http.StatusUnauthorized {
		t.Errorf("webhook without credentials: status %d, want 401", code)
	}
	if code := send("signed", true); code < 200 || code > 299 {
		t.Errorf("webhook with the mounted credentials: status %d, want 2xx", code)
	}
	want := host + "/" + repo + "@" + digest
	if !slices.ContainsFunc(queued, func(s string) bool { return strings.HasPrefix(s, host+"/"+repo) }) {
		t.Errorf("webhook queued %q, want %s", queued, want)
	}
}
