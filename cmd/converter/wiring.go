package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/hcsshim"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust/keys"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
	"github.com/cimconv/cimconv/internal/version"
)

// registryFlags configure registry access for every command that talks to a
// registry.
type registryFlags struct {
	insecure     []string
	dockerConfig string
	noFallback   bool
	foreignHosts []string
}

func (f *registryFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.insecure, "insecure", nil, "registry hosts to reach over plain HTTP (loopback is always allowed)")
	fs.StringVar(&f.dockerConfig, "docker-config", os.Getenv("CIMCONV_DOCKER_CONFIG"), "dockerconfigjson file with registry credentials (e.g. a mounted image pull secret)")
	fs.BoolVar(&f.noFallback, "no-referrers-fallback", false, "fail instead of using the sha256-<digest> tag where the registry lacks the referrers API")
	fs.StringSliceVar(&f.foreignHosts, "foreign-layer-hosts", nil, "hosts non-distributable layers may be fetched from (default: Microsoft's container registry)")
}

func (f *registryFlags) client(log *zap.Logger, extra ...registry.Option) (*registry.Client, error) {
	opts := []registry.Option{
		registry.WithLogger(log),
		registry.WithUserAgent("cimconv/" + version.Version),
		registry.WithReferrersFallback(!f.noFallback),
	}
	if len(f.insecure) > 0 {
		opts = append(opts, registry.WithInsecure(f.insecure...))
	}
	if f.dockerConfig != "" {
		opts = append(opts, registry.WithDockerConfig(f.dockerConfig))
	}
	if len(f.foreignHosts) > 0 {
		opts = append(opts, registry.WithForeignLayerHosts(f.foreignHosts...))
	}
	return registry.New(append(opts, extra...)...)
}

// buildFlags configure the builder and the chain cache.
type buildFlags struct {
	builder    string
	cacheDir   string
	workDir    string
	format     string
	hiveMerge  string // "" reads CIMCONV_HIVE_MERGE (serve), default portable
	signingKey string
}

func (f *buildFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.builder, "builder", envOr("CIMCONV_BUILDER", "auto"), "CIM builder: auto, portable (experimental, every OS) or hcsshim (Windows)")
	fs.StringVar(&f.format, "cim-format", builder.FormatForked, "CIM format for the hcsshim builder: forked or block")
	fs.StringVar(&f.cacheDir, "cache-dir", envOr("CIMCONV_CACHE_DIR", defaultCacheDir()), "chain cache directory (built layers by chainID)")
	fs.StringVar(&f.workDir, "work-dir", envOr("CIMCONV_WORK_DIR", ""), "directory chains are built in (default: a temp dir)")
	fs.StringVar(&f.signingKey, "signing-key", envOr("CIMCONV_SIGNING_KEY", ""), "PEM private key (PKCS#8; ECDSA P-256/P-384 or Ed25519) that signs every pushed artifact; default: unsigned")
	registerHiveMerge(fs, &f.hiveMerge)
}

// registerHiveMerge adds --hive-merge (env CIMCONV_HIVE_MERGE).
func registerHiveMerge(fs *pflag.FlagSet, v *string) {
	fs.StringVar(v, "hive-merge", envOr("CIMCONV_HIVE_MERGE", "portable"),
		"delta registry hives of app layers with the portable builder: portable (merge in pure Go; experimental, never compared with offreg) or refuse")
}

// hiveMergeOption turns a --hive-merge value ("" reads CIMCONV_HIVE_MERGE,
// default portable) into the portable builder's option.
func hiveMergeOption(v string) (portable.Option, error) {
	if v == "" {
		v = envOr("CIMCONV_HIVE_MERGE", "portable")
	}
	m, err := portable.ParseHiveMerge(v)
	if err != nil {
		return nil, fmt.Errorf("--hive-merge: %w", err)
	}
	return portable.WithHiveMerge(m), nil
}

// signerOption loads the signing key, if one is configured.
func signerOption(path string, log *zap.Logger) ([]convert.Option, error) {
	if path == "" {
		log.Warn("no signing key: artifacts are pushed unsigned and nodes that verify will not use them")
		return nil, nil
	}
	k, err := keys.LoadPrivateKey(path)
	if err != nil {
		return nil, err
	}
	s, err := sigstore.NewSigner(k)
	if err != nil {
		return nil, err
	}
	log.Info("artifacts will be signed", zap.String("key", s.KeyID()))
	return []convert.Option{convert.WithSigner(s)}, nil
}

func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "cimconv", "chains")
	}
	return filepath.Join(os.TempDir(), "cimconv", "chains")
}

// selectBuilder picks the builder by name and logs why.
func (f *buildFlags) selectBuilder(log *zap.Logger) (builder.Builder, error) {
	hm, err := hiveMergeOption(f.hiveMerge)
	if err != nil {
		return nil, err
	}
	b, why, err := builder.Select(f.builder, runtime.GOOS,
		func() (builder.Builder, error) { return portable.New(portable.WithLogger(log), hm), nil },
		func() (builder.Builder, error) {
			return hcsshim.New(hcsshim.WithFormat(f.format), hcsshim.WithLogger(log))
		})
	if err != nil {
		return nil, fmt.Errorf("--builder %s: %w", f.builder, err)
	}
	log.Info("builder selected", zap.String("builder", b.Capabilities().Name), zap.String("why", why))
	return b, nil
}

// builderAndCache selects the builder and opens its chain cache: one cache
// per builder, as a CimFS-built child needs CimFS-built parents.
func (f *buildFlags) builderAndCache(log *zap.Logger) (builder.Builder, *convert.Cache, error) {
	b, err := f.selectBuilder(log)
	if err != nil {
		return nil, nil, err
	}
	cache, err := convert.NewCache(filepath.Join(f.cacheDir, b.Capabilities().Name))
	if err != nil {
		return nil, nil, err
	}
	return b, cache, nil
}

// converter wires a Converter from flags.
func (f *buildFlags) converter(log *zap.Logger, reg *registry.Client, opts ...convert.Option) (*convert.Converter, error) {
	b, cache, err := f.builderAndCache(log)
	if err != nil {
		return nil, err
	}
	sign, err := signerOption(f.signingKey, log)
	if err != nil {
		return nil, err
	}
	opts = append(append([]convert.Option{convert.WithLogger(log), convert.WithWorkDir(f.workDir)}, sign...), opts...)
	return convert.New(reg, b, cache, opts...), nil
}
