package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/trust/keys"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
)

// trustFlags say which artifacts a node-side command may use.
type trustFlags struct {
	keys     []string
	unsigned bool
}

func (f *trustFlags) register(fs *pflag.FlagSet) {
	var def []string
	if v := os.Getenv("CIMCONV_TRUSTED_KEYS"); v != "" {
		def = strings.Split(v, ",")
	}
	fs.StringArrayVar(&f.keys, "trusted-key", def, "PEM public key whose signatures are trusted; repeat for several (key rotation) (CIMCONV_TRUSTED_KEYS, comma-separated)")
	fs.BoolVar(&f.unsigned, "trust-unsigned", false, "DEVELOPMENT ONLY: use artifacts without checking any signature (anyone with push rights can attach one)")
}

// verifier builds the trust policy: the trusted keys, or AllowUnsigned.
func (f *trustFlags) verifier(reg *registry.Client, log *zap.Logger) (trust.Verifier, error) {
	switch {
	case f.unsigned && len(f.keys) > 0:
		return nil, errors.New("--trust-unsigned and --trusted-key exclude each other")
	case f.unsigned:
		log.Warn("--trust-unsigned: artifact signatures are NOT checked (development only)")
		return trust.AllowUnsigned(), nil
	case len(f.keys) == 0:
		return nil, errors.New("no trust policy: give --trusted-key FILE (repeatable; the workers' public signing keys) or, for development only, --trust-unsigned")
	}
	pubs, err := keys.LoadPublicKeys(f.keys...)
	if err != nil {
		return nil, err
	}
	return sigstore.NewVerifier(reg, pubs, sigstore.WithLogger(log))
}

// nodeSide is how the node-side commands (fetch, verify) start: the
// logger, the --platform, a registry client and the trust policy.
func nodeSide(g *globalFlags, rf *registryFlags, tf *trustFlags, platform string) (*zap.Logger, *v1.Platform, *registry.Client, trust.Verifier, error) {
	log, err := g.logger()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("--platform %q: %w", platform, err)
	}
	reg, err := rf.client(log)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ver, err := tf.verifier(reg, log)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return log, p, reg, ver, nil
}
