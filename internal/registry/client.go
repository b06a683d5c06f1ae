package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/keymutex"
	"github.com/cimconv/cimconv/internal/wait"
)

// DefaultForeignLayerHosts are the hosts Windows base images point their
// non-distributable layers at (Microsoft's container registry and its CDN).
var DefaultForeignLayerHosts = []string{"mcr.microsoft.com", "*.data.mcr.microsoft.com", "go.microsoft.com"}

// Client does all registry I/O. It is safe for concurrent use; create one per
// process and share it (it caches authenticated transports per repository).
type Client struct {
	keychain     authn.Keychain
	dockerConfig string
	insecure     []string
	base         http.RoundTripper
	retry        RetryPolicy
	foreignHosts []string
	fallback     bool
	log          *zap.Logger
	userAgent    string
	byteCounter  func(n int64)
	sleep        sleepFunc
	transportsMu sync.Mutex
	transports   map[string]http.RoundTripper
	transportsSF singleflight.Group
	setupTimeout time.Duration  // transportSetupTimeout; tests shorten it
	subjectLocks keymutex.Mutex // serializes fallback tag updates per subject
	retryingBase http.RoundTripper
	plainClient  *http.Client // foreign layer URLs: no registry auth
	dialGuard    DialGuard    // WithDialGuard
}

// Option configures a Client.
type Option func(*Client)

// WithKeychain sets where credentials come from. Default:
// authn.DefaultKeychain (docker config.json and credential helpers).
func WithKeychain(k authn.Keychain) Option { return func(c *Client) { c.keychain = k } }

// WithDockerConfig adds credentials from a dockerconfigjson file (the
// `.dockerconfigjson` key of a kubernetes.io/dockerconfigjson Secret, or a
// docker config.json). This is how Kubernetes image pull secrets are used:
// mount the Secret into the worker pod and pass the file path. Entries from
// this file win over the keychain. A missing or malformed file makes every
// operation fail with an error naming the file.
func WithDockerConfig(path string) Option { return func(c *Client) { c.dockerConfig = path } }

// WithInsecure allows plain HTTP for these registry hosts ("host" or
// "host:port"). Loopback hosts are always allowed plain HTTP.
func WithInsecure(registries ...string) Option {
	return func(c *Client) { c.insecure = append(c.insecure, registries...) }
}

// WithRetry sets the retry policy; zero fields take DefaultRetryPolicy's.
func WithRetry(p RetryPolicy) Option { return func(c *Client) { c.retry = p } }

// WithForeignLayerHosts replaces the allowlist of hosts non-distributable
// layers may be fetched from. "*.example.com" matches any subdomain.
func WithForeignLayerHosts(hosts ...string) Option {
	return func(c *Client) { c.foreignHosts = slices.Clone(hosts) }
}

// WithReferrersFallback enables (default) or disables the sha256-<hex> tag
// index used where a registry lacks the OCI 1.1 referrers API.
func WithReferrersFallback(enabled bool) Option { return func(c *Client) { c.fallback = enabled } }

// WithLogger sets the logger (default: no-op).
func WithLogger(l *zap.Logger) Option { return func(c *Client) { c.log = l } }

// WithUserAgent sets the User-Agent sent to registries.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithByteCounter is called with the number of bytes read from every layer
// and blob stream (for metrics: cimconv_bytes_total{direction="fetched"}).
func WithByteCounter(f func(n int64)) Option { return func(c *Client) { c.byteCounter = f } }

// New returns a Client. A configuration that cannot work (an unreadable or
// malformed docker config) is an error here, not on every later operation.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		keychain:     authn.DefaultKeychain,
		foreignHosts: slices.Clone(DefaultForeignLayerHosts),
		fallback:     true,
		log:          zap.NewNop(),
		userAgent:    "cimconv",
		sleep:        wait.Sleep,
		transports:   map[string]http.RoundTripper{},
		setupTimeout: transportSetupTimeout,
	}
	for _, o := range opts {
		o(c)
	}
	if c.base == nil { // a clone of http.DefaultTransport
		c.base = http.DefaultTransport.(*http.Transport).Clone()
	}
	if c.dialGuard != nil {
		t, ok := c.base.(*http.Transport)
		if !ok {
			return nil, fmt.Errorf("registry client: a dial guard needs an *http.Transport, not %T", c.base)
		}
		t = t.Clone()
		guardDials(t, c.dialGuard, func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		})
		c.base = t
	}
	c.retry = c.retry.withDefaults()
	if c.dockerConfig != "" {
		kc, err := loadDockerConfig(c.dockerConfig)
		if err != nil {
			return nil, err
		}
		c.keychain = authn.NewMultiKeychain(kc, c.keychain)
	}
	c.retryingBase = &retryTransport{
		inner:  &schemeGuard{inner: c.base, allowed: c.plainHTTPAllowed},
		policy: c.retry,
		sleep:  func(ctx context.Context, d time.Duration) error { return c.sleep(ctx, d) },
		now:    time.Now,
		log:    c.log,
	}
	c.plainClient = &http.Client{Transport: transport.NewUserAgent(c.retryingBase, c.userAgent)}
	return c, nil
}

// plainHTTPAllowed: loopback always, otherwise only hosts given to
// WithInsecure (compared with and without port).
func (c *Client) plainHTTPAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, r := range c.insecure {
		if strings.EqualFold(r, hostport) || strings.EqualFold(r, host) {
			return true
		}
	}
	return false
}

// schemeGuard refuses plain-HTTP requests to hosts not allowed plain HTTP.
// ggcr would otherwise fall back to http for RFC 1918 addresses on its own.
type schemeGuard struct {
	inner   http.RoundTripper
	allowed func(host string) bool
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.allowed(req.URL.Host) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("%s: %w (use --insecure %s to allow it)", redactURL(req.URL), ErrInsecureRefused, req.URL.Host)
	}
	return g.inner.RoundTrip(req)
}

func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.User = nil
	return c.String()
}

// parseReference parses ref so that hosts allowed plain HTTP get
// name.Insecure (ggcr then tries http after https).
func (c *Client) parseReference(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	if c.plainHTTPAllowed(r.Context().RegistryStr()) {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
		}
	}
	return r, nil
}

// repoFor re-creates repo with the insecure flag this client decides.
func (c *Client) repoFor(repo name.Repository) name.Repository {
	if c.plainHTTPAllowed(repo.RegistryStr()) {
		if r, err := name.NewRepository(repo.Name(), name.Insecure); err == nil {
			return r
		}
	}
	return repo
}

// transportSetupTimeout bounds the setup of a repository's transport
// (credentials, ping, first token). The setup is shared by every caller that
// needs it meanwhile and runs detached from all of them, so it needs a limit
// of its own: room for the retry policy's backoffs and a Retry-After or two,
// not for a registry that never answers.
const transportSetupTimeout = 3 * time.Minute

// httpClient returns an authenticated client for repo with the given
// action (transport.PullScope or transport.PushScope, which is "push,pull"); extra are additional scopes (mount sources).
//
// Concurrent callers share one setup per repository and scopes. It runs on a
// context detached from every caller (values kept, cancellation not): a
// caller that gives up returns at once with its own ctx's error, and the
// others, whose contexts are live, still get the transport. Only a
// successful setup is kept; a failed one is tried again by the next caller.
func (c *Client) httpClient(ctx context.Context, repo name.Repository, action string, extra ...string) (*http.Client, error) {
	repo = c.repoFor(repo)
	scopes := []string{repo.Scope(action)}
	scopes = append(scopes, extra...)
	key := repo.RegistryStr() + "|" + repo.Scheme() + "|" + strings.Join(scopes, " ")
	c.transportsMu.Lock()
	rt, ok := c.transports[key]
	c.transportsMu.Unlock()
	if ok {
		return &http.Client{Transport: rt}, nil
	}
	setup := c.transportsSF.DoChan(key, func() (v any, err error) {
		// DoChan re-raises a panic on a goroutine of its own, where
		// nothing recovers it: it would end the process.
		defer func() {
			if p := recover(); p != nil {
				v, err = nil, fmt.Errorf("setting up a transport for %s panicked: %v", repo.RegistryStr(), p)
			}
		}()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.setupTimeout)
		defer cancel()
		rt, err := c.newTransport(sctx, repo, scopes)
		if err != nil {
			if sctx.Err() != nil {
				// Its own deadline, not a caller's: a registry too slow
				// now, which a later try may find answering.
				return nil, errdefs.Unavailable(fmt.Errorf("setting up a transport for %s: no answer within %s: %v", repo.RegistryStr(), c.setupTimeout, err))
			}
			return nil, err
		}
		c.transportsMu.Lock()
		c.transports[key] = rt
		c.transportsMu.Unlock()
		return rt, nil
	})
	select {
	case r := <-setup:
		if r.Err != nil {
			return nil, r.Err
		}
		return &http.Client{Transport: r.Val.(http.RoundTripper)}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// newTransport resolves repo's credentials and makes the authenticating
// transport (ping, and the first token where the registry wants one).
func (c *Client) newTransport(ctx context.Context, repo name.Repository, scopes []string) (http.RoundTripper, error) {
	auth, err := authn.Resolve(ctx, c.keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("resolving credentials for %s: %w", repo.RegistryStr(), err)
	}
	return transport.NewWithContext(ctx, repo.Registry, auth, transport.NewUserAgent(c.retryingBase, c.userAgent), scopes)
}

// registryURL builds scheme://registry/v2/<repo>/<suffix>; the scheme is
// rewritten by ggcr's transport to what the ping found.
func registryURL(repo name.Repository, suffix string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), suffix)
}

// do sends req and checks the status against ok codes, returning a
// transport.Error (structured registry diagnostics) otherwise.
func do(hc *http.Client, req *http.Request, ok ...int) (*http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, ok...); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// dockerConfigKeychain serves credentials from one dockerconfigjson file.
type dockerConfigKeychain struct {
	path  string
	auths map[string]authn.AuthConfig // key: normalized registry host
}

func loadDockerConfig(path string) (*dockerConfigKeychain, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	var f struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("docker config %s: not a dockerconfigjson file: %w", path, err)
	}
	kc := &dockerConfigKeychain{path: path, auths: map[string]authn.AuthConfig{}}
	for k, v := range f.Auths {
		kc.auths[normalizeRegistryKey(k)] = v
	}
	return kc, nil
}

// normalizeRegistryKey turns "https://index.docker.io/v1/" or
// "http://host:5000" into the bare host[:port] ggcr uses.
func normalizeRegistryKey(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	if i := strings.IndexByte(k, '/'); i >= 0 {
		k = k[:i]
	}
	k = strings.ToLower(k)
	if k == "docker.io" || k == "registry-1.docker.io" {
		k = name.DefaultRegistry
	}
	return k
}

func (k *dockerConfigKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if a, ok := k.auths[normalizeRegistryKey(r.RegistryStr())]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}
