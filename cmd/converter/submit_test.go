package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/queue/queuetest"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/service"
	"github.com/cimconv/cimconv/internal/worker"
)

// runCLI runs the converter command line in-process.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--log-level=error"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// runCLISplit runs the converter command line in-process and returns what
// it printed on stdout and on stderr apart.
func runCLISplit(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(args, "--log-level=error"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// startService runs the service with conv on a fresh data dir and free
// ports until the test ends.
func startService(t *testing.T, cfg service.Config, conv worker.Converter) *service.Service {
	t.Helper()
	cfg.Listen, cfg.DataDir, cfg.EmbeddedNATSPort = "127.0.0.1:0", t.TempDir(), 0
	ctx, cancel := context.WithCancel(context.Background())
	s, err := service.Start(ctx, service.Options{Config: cfg, Converter: conv})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = s.Wait() })
	return s
}

func TestSubmitStatusDeadCommands(t *testing.T) {
	cfg := service.DefaultConfig()
	cfg.ShutdownGrace = time.Second
	conv := worker.ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		if strings.HasSuffix(req.Image, ":bad") {
			return nil, worker.Permanent(errors.New("no windows/amd64 manifest"))
		}
		if strings.HasSuffix(req.Image, ":slow") {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return &queue.Result{SubjectDigests: []string{"sha256:" + strings.Repeat("a", 64)}, ArtifactDigests: []string{"sha256:" + strings.Repeat("b", 64)}, LayersBuilt: 3}, nil
	})
	url := "--nats-url=" + startService(t, cfg, conv).NATSURL()

	// reg.example does not exist: the artifact check is skipped.
	out, err := runCLI(t, "submit", "reg.example/app:good", "--wait", "--no-verify", url)
	if err != nil || !strings.Contains(out, "converted (layers built 3") || !strings.Contains(out, "artifact sha256:bbbb") {
		t.Fatalf("submit --wait good: %q %v", out, err)
	}
	out, err = runCLI(t, "submit", "reg.example/app:bad", "--wait", url)
	if err == nil || exitCode(err) == 0 || !strings.Contains(err.Error(), "no windows/amd64 manifest") || !strings.Contains(err.Error(), "permanent") {
		t.Fatalf("submit --wait bad: %q err=%v, want a non-zero exit with the reason", out, err)
	}
	out, err = runCLI(t, "status", "reg.example/app:bad", "--json", url)
	var st queue.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.State != queue.StateDead {
		t.Fatalf("status bad: %q %v", out, err)
	}
	if out, err = runCLI(t, "status", "sha256:"+strings.Repeat("a", 64), url); err != nil || !strings.Contains(out, "succeeded") {
		t.Errorf("status by subject digest: %q %v", out, err)
	}
	if _, err = runCLI(t, "status", "reg.example/never:1", url); err == nil || !strings.Contains(err.Error(), "no conversion recorded") {
		t.Errorf("status of an unknown image: %v", err)
	}
	// The dead state is stored a moment before the dead letter: poll.
	var dead []struct {
		Seq    uint64 `json:"seq"`
		Reason string `json:"reason"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = runCLI(t, "dead", "list", "--json", url)
		dead = nil
		if err == nil && json.Unmarshal([]byte(out), &dead) == nil && len(dead) == 1 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(dead) != 1 || dead[0].Reason != "permanent" {
		t.Fatalf("dead list: %q %v", out, err)
	}
	if _, err = runCLI(t, "dead", "replay", url); err == nil {
		t.Error("dead replay without SEQ or --all was accepted")
	}
	if out, err = runCLI(t, "dead", "replay", "--all", url); err != nil || !strings.Contains(out, "re-queued 1") {
		t.Fatalf("dead replay --all: %q %v", out, err)
	}
	// The replayed request fails again and is back in the dead letters,
	// under a new sequence: the replayed letter itself is gone.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ = runCLI(t, "dead", "list", "--json", url)
		var again []struct {
			Seq uint64 `json:"seq"`
		}
		_ = json.Unmarshal([]byte(out), &again)
		if len(again) == 1 && again[0].Seq != dead[0].Seq {
			break
		}
		if len(again) > 1 || time.Now().After(deadline) {
			t.Fatalf("after replay: %q", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, err = runCLI(t, "submit", "reg.example/app:slow", "--wait", "--timeout=700ms", url)
	if err == nil || exitCode(err) == 0 || !strings.Contains(err.Error(), "no result before the timeout") {
		t.Errorf("submit --wait past its timeout: %v", err)
	}
}

func TestServeRefusesWithoutConverter(t *testing.T) {
	if serveConverter != nil {
		t.Skip("conversion is wired in this build")
	}
	_, err := runCLI(t, "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--embedded-nats-port", "0")
	if err == nil || !strings.Contains(err.Error(), "conversion is not wired") {
		t.Errorf("serve without a converter: err = %v", err)
	}
}

// goneArtifactService starts the service with a converter whose result
// names an artifact the registry does not have (gone), except for requests
// found returns true for, whose result names an image it has (exists). It
// returns the registry, both digests and the --nats-url flag.
func goneArtifactService(t *testing.T, found func(queue.Request) bool) (reg, exists, gone, url string) {
	t.Helper()
	reg = registrytest.NewReferrersRegistry(t)
	layer := registrytest.Gzip(t, registrytest.Tar(t, "Files/a.txt", "a"))
	windows := v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}
	exists = registrytest.PushImage(t, reg+"/win/app:stands-for-an-artifact", [][]byte{layer}, windows).Digest.String()
	gone = "sha256:" + strings.Repeat("f", 64)
	conv := worker.ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		artifact := gone
		if found(req) {
			artifact = exists
		}
		return &queue.Result{SubjectDigests: []string{"sha256:" + strings.Repeat("a", 64)}, ArtifactDigests: []string{artifact}}, nil
	})
	url = "--nats-url=" + startService(t, service.DefaultConfig(), conv).NATSURL()
	return reg, exists, gone, url
}

// submit --wait reports success only for an artifact the registry has: a
// result recorded for an artifact deleted since (answered from the
// duplicate window) is converted again, and one still missing is an error
// (issue 9 #5/#9).
func TestSubmitWaitChecksTheArtifactExists(t *testing.T) {
	reg, exists, gone, url := goneArtifactService(t, func(req queue.Request) bool { return req.Force && strings.HasSuffix(req.Image, ":v1") })

	out, err := runCLI(t, "submit", reg+"/win/app:v1", "--wait", url)
	if err != nil || !strings.Contains(out, gone+" is not in the registry; converting again") || !strings.Contains(out, "artifact "+exists) {
		t.Fatalf("submit --wait: %q %v, want a second conversion ending in %s", out, err, exists)
	}
	out, err = runCLI(t, "submit", reg+"/win/app:v2", "--wait", url)
	if err == nil || exitCode(err) == 0 || !strings.Contains(err.Error(), "artifact "+gone+" is not in the registry") {
		t.Fatalf("submit --wait with a missing artifact: %q %v, want a non-zero exit", out, err)
	}
}

// submit --wait --json prints the result as JSON on stdout and nothing
// else, also when the recorded artifact is gone and the image is converted
// again: that notice goes to stderr. Before, it was printed on stdout ahead
// of the JSON, and a CI script parsing stdout failed.
func TestSubmitWaitJSONPrintsOnlyJSONOnStdout(t *testing.T) {
	reg, exists, gone, url := goneArtifactService(t, func(req queue.Request) bool { return req.Force })

	stdout, stderr, err := runCLISplit(t, "submit", reg+"/win/app:v1", "--wait", "--json", url)
	if err != nil {
		t.Fatalf("submit --wait --json: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	r := strings.NewReader(stdout)
	dec := json.NewDecoder(r)
	var res queue.Result
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("stdout does not start with the JSON result: %v\nstdout:\n%s", err, stdout)
	}
	if rest, _ := io.ReadAll(io.MultiReader(dec.Buffered(), r)); strings.TrimSpace(string(rest)) != "" {
		t.Errorf("stdout has more than the JSON result:\n%s", stdout)
	}
	if len(res.ArtifactDigests) != 1 || res.ArtifactDigests[0] != exists || !res.Request.Force {
		t.Errorf("result %+v, want the forced conversion's artifact %s", res, exists)
	}
	if !strings.Contains(stderr, gone+" is not in the registry; converting again") {
		t.Errorf("stderr %q does not say the image is converted again", stderr)
	}
}

// submit --wait of a duplicate of a finished request answers at once with
// its result, also when a newer request for the same image (here another
// os.version policy) has taken over the image's status since. Before, it
// waited until --timeout.
func TestSubmitWaitDuplicateAfterAnotherRequestForTheImage(t *testing.T) {
	conv := worker.ConverterFunc(func(ctx context.Context, req queue.Request, _ func(string)) (*queue.Result, error) {
		artifact := "sha256:" + strings.Repeat("b", 64)
		if req.OSVersion != "" {
			artifact = "sha256:" + strings.Repeat("c", 64)
		}
		return &queue.Result{SubjectDigests: []string{"sha256:" + strings.Repeat("a", 64)}, ArtifactDigests: []string{artifact}}, nil
	})
	url := "--nats-url=" + startService(t, service.DefaultConfig(), conv).NATSURL()

	if out, err := runCLI(t, "submit", "reg.example/app:t", "--wait", "--no-verify", url); err != nil {
		t.Fatalf("first submit: %q %v", out, err)
	}
	if out, err := runCLI(t, "submit", "reg.example/app:t", "--os-version", "10.0.20348", "--wait", "--no-verify", url); err != nil {
		t.Fatalf("submit with another os.version policy: %q %v", out, err)
	}
	// The first request again, within the duplicate window.
	start := time.Now()
	out, err := runCLI(t, "submit", "reg.example/app:t", "--wait", "--no-verify", "--timeout=10s", url)
	if err != nil || !strings.Contains(out, "artifact sha256:bbbb") {
		t.Fatalf("duplicate submit --wait after %s: %q %v, want the first request's result", time.Since(start).Round(time.Millisecond), out, err)
	}
}

// The client commands connect to a NATS that requires mutual TLS (the chart's
// nats.tls) with the files serve reads, from the same environment variables
// (a converter pod's, for kubectl exec) or from flags; without them they fail.
func TestClientCommandsUseNATSTLS(t *testing.T) {
	p := queuetest.NewPKI(t)
	natsURL := queuetest.TLS(t, p, true)
	ctx := context.Background()
	nc, err := queue.Connect(ctx, natsURL, queue.WithTLS(p.CA, p.ClientCert, p.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := queue.Open(ctx, nc); err != nil { // provision, as serve does
		t.Fatal(err)
	}
	url := "--nats-url=" + natsURL

	if _, err := runCLI(t, "submit", "reg.example/app:env", "--no-verify", url); err == nil {
		t.Fatal("submit without the TLS files reached a NATS that requires them")
	}
	out, err := runCLI(t, "submit", "reg.example/app:flags", "--no-verify", url,
		"--nats-tls-ca="+p.CA, "--nats-tls-cert="+p.ClientCert, "--nats-tls-key="+p.ClientKey)
	if err != nil {
		t.Fatalf("submit with --nats-tls-*: %q %v", out, err)
	}
	t.Setenv("CIMCONV_NATS_TLS_CA", p.CA)
	t.Setenv("CIMCONV_NATS_TLS_CERT", p.ClientCert)
	t.Setenv("CIMCONV_NATS_TLS_KEY", p.ClientKey)
	if out, err := runCLI(t, "status", "reg.example/app:flags", url); err != nil || !strings.Contains(out, "queued") {
		t.Fatalf("status with CIMCONV_NATS_TLS_*: %q %v", out, err)
	}
	if out, err := runCLI(t, "dead", "list", url); err != nil {
		t.Fatalf("dead list with CIMCONV_NATS_TLS_*: %q %v", out, err)
	}
}
