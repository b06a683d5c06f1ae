package sigstore_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/exe"
	"github.com/cimconv/cimconv/internal/trust/trusttest"
)

// cosignPath finds the reference verifier that .ci/run builds from the Go
// module proxy (github.com/sigstore/cosign/v3/cmd/cosign): $CIMCONV_COSIGN,
// then PATH, then .ci/run's cache. Absent, the test skips visibly, or fails
// when CI is set.
func cosignPath(t *testing.T) string {
	t.Helper()
	cands := []string{os.Getenv("CIMCONV_COSIGN")}
	if p, err := exec.LookPath("cosign"); err == nil {
		cands = append(cands, p)
	}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, exe.Path(filepath.Join(home, ".cache", "cimconv-ci", "bin"), "cosign"))
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("cosign (the reference verifier) is not installed; .ci/run builds it with go install github.com/sigstore/cosign/v3/cmd/cosign")
	}
	t.Skip("cosign not found (set CIMCONV_COSIGN or run .ci/run): the reference-verifier check is skipped")
	return ""
}

func cosignVerify(t *testing.T, cosign, pubPath, ref string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cosign, "verify", "--key", pubPath, "--insecure-ignore-tlog=true",
		"--allow-http-registry", "--allow-insecure-registry", ref)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"), "DOCKER_CONFIG="+filepath.Join(home, "docker"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestCosignVerify: the signature a worker pushes verifies with the
// ecosystem's reference verifier, `cosign verify --key`, and cosign refuses
// an untrusted key and a signature copied onto a tampered artifact.
func TestCosignVerify(t *testing.T) {
	cosign := cosignPath(t)
	e := newEnv(t)
	dir := t.TempDir()
	worker, other := trusttest.NewKey(t, dir, "worker"), trusttest.NewKey(t, dir, "other")
	a, sig := e.signed(t, e.a, worker)
	ref := e.a.Context().Digest(a.Desc.Digest.String()).String()

	out, err := cosignVerify(t, cosign, worker.PubPath, ref)
	if err != nil {
		t.Fatalf("cosign verify --key worker.pub %s: %v\n%s", ref, err, out)
	}
	if !strings.Contains(out, a.Desc.Digest.Hex) {
		t.Fatalf("cosign's verified payload does not name the artifact digest:\n%s", out)
	}
	t.Logf("cosign verify --key worker.pub: %s", lastLine(out))
	out, err = cosignVerify(t, cosign, other.PubPath, ref)
	if err == nil {
		t.Fatalf("cosign accepted the artifact with an untrusted key:\n%s", out)
	}
	t.Logf("cosign verify --key other.pub: %s", lastLine(out))
	blobs := placeholderBlobs(a)
	blobs[0] = []byte("attacker's CIM")
	forged := trusttest.PushManifest(t, e.reg, e.a, mustJSON(t, a.Config), blobs, time.Now())
	e.copySignature(t, e.a.Context(), sig, forged.Desc)
	fref := e.a.Context().Digest(forged.Desc.Digest.String()).String()
	out, err = cosignVerify(t, cosign, worker.PubPath, fref)
	if err == nil {
		t.Fatalf("cosign accepted a tampered artifact carrying a copied signature:\n%s", out)
	}
	t.Logf("cosign verify of the tampered artifact: %s", lastLine(out))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
