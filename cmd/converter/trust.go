package main

import (
	"errors"
	"os"
	"strings"

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
