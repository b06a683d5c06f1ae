package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry"
)

func init() { registeredCommands = append(registeredCommands, newSubmitCmd) }

// natsClientFlags connect the client commands (submit, status, dead) to the
// service's NATS.
type natsClientFlags struct {
	url, creds             string
	tlsCA, tlsCert, tlsKey string
}

// register adds the flags, with the environment variables serve reads as
// defaults, so a client run in a converter pod (kubectl exec) connects the
// way the service does, TLS included (the chart's nats.tls).
func (f *natsClientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "nats-url", envOr("CIMCONV_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (CIMCONV_NATS_URL)")
	fs.StringVar(&f.creds, "nats-creds", envOr("CIMCONV_NATS_CREDS", ""), "NATS credentials file (CIMCONV_NATS_CREDS)")
	fs.StringVar(&f.tlsCA, "nats-tls-ca", envOr("CIMCONV_NATS_TLS_CA", ""), "CA bundle to verify the NATS server (CIMCONV_NATS_TLS_CA)")
	fs.StringVar(&f.tlsCert, "nats-tls-cert", envOr("CIMCONV_NATS_TLS_CERT", ""), "client certificate for NATS (CIMCONV_NATS_TLS_CERT)")
	fs.StringVar(&f.tlsKey, "nats-tls-key", envOr("CIMCONV_NATS_TLS_KEY", ""), "client key for NATS (CIMCONV_NATS_TLS_KEY)")
}

// cliOutageTolerance bounds how long a client command retries while the
// NATS cluster cannot answer (an election): a person at a terminal gets a
// clear "NATS unavailable" error instead of the workers' two-minute wait.
const cliOutageTolerance = 15 * time.Second

// open binds to the provisioned queue without changing it.
func (f *natsClientFlags) open(ctx context.Context, log *zap.Logger) (*queue.Queue, *nats.Conn, error) {
	nc, err := queue.Connect(ctx, f.url, queue.WithName("cimconv-cli"), queue.WithCredsFile(f.creds),
		queue.WithTLS(f.tlsCA, f.tlsCert, f.tlsKey), queue.WithConnLogger(log))
	if err != nil {
		return nil, nil, err
	}
	q, err := queue.Open(ctx, nc, queue.WithProvision(false), queue.WithLogger(log), queue.WithOutageTolerance(cliOutageTolerance))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return q, nc, nil
}

func newSubmitCmd(g *globalFlags) *cobra.Command {
	var (
		nf      natsClientFlags
		req     queue.Request
		wait    bool
		timeout time.Duration
		asJSON  bool
		rf      registryFlags
		noCheck bool
	)
	cmd := &cobra.Command{
		Use:   "submit IMAGE",
		Short: "Queue the conversion of IMAGE (the CI publish hook); --wait for the result",
		Long: `submit publishes a conversion request to the service's queue. Requests for the same
image and options within the duplicate window collapse into one.

With --wait it waits for the result and exits non-zero, with the reason, when the
conversion failed or the timeout passed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			req.Image = args[0]
			req.Source = "cli"
			if req.Requester == "" {
				req.Requester = os.Getenv("USER")
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			q, nc, err := nf.open(ctx, log)
			if err != nil {
				return err
			}
			defer nc.Close()
			var check artifactCheck
			if wait && !noCheck {
				reg, err := rf.client(log)
				if err != nil {
					return err
				}
				check = registryCheck(reg)
			}
			return runSubmit(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), q, req, wait, asJSON, check)
		},
	}
	nf.register(cmd.Flags())
	cmd.Flags().StringVar(&req.Platform, "platform", queue.DefaultPlatform, "os/arch of the manifest to convert")
	cmd.Flags().StringVar(&req.OSVersion, "os-version", "", "os.version policy, e.g. 10.0.20348 (empty: every Windows build)")
	cmd.Flags().StringVar(&req.Builder, "builder", queue.DefaultBuilder, "auto, hcsshim or portable (portable is EXPERIMENTAL)")
	cmd.Flags().BoolVar(&req.Force, "force", false, "convert even if an artifact already exists")
	cmd.Flags().StringVar(&req.Requester, "requester", "", "who asks (recorded in the request; default $USER)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the result; exit non-zero if the conversion failed")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "give up waiting after this long (0: never)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&noCheck, "no-verify", false, "with --wait, trust the recorded result instead of checking that the artifact exists in the registry")
	cmd.Flags().StringSliceVar(&rf.insecure, "insecure", nil, "registry hosts to reach over plain HTTP when checking the artifact (loopback is always allowed)")
	cmd.Flags().StringVar(&rf.dockerConfig, "docker-config", os.Getenv("CIMCONV_DOCKER_CONFIG"), "dockerconfigjson file with registry credentials for checking the artifact")
	return cmd
}

// artifactCheck returns the artifacts of a successful result that are not
// in the registry (nil: all exist), or an error when it cannot tell.
type artifactCheck func(ctx context.Context, image string, artifacts []string) ([]string, error)

// registryCheck looks each artifact manifest up in the image's repository.
func registryCheck(reg *registry.Client) artifactCheck {
	return func(ctx context.Context, image string, artifacts []string) ([]string, error) {
		ref, err := name.ParseReference(image, name.Insecure)
		if err != nil {
			return nil, err
		}
		var missing []string
		for _, a := range artifacts {
			_, _, err := reg.FetchManifest(ctx, ref.Context().Digest(a))
			switch {
			case errors.Is(err, registry.ErrNotFound):
				missing = append(missing, a)
			case err != nil:
				return nil, fmt.Errorf("check artifact %s in %s (--no-verify skips the check): %w", a, ref.Context(), err)
			}
		}
		return missing, nil
	}
}

// runSubmit prints the outcome on out (only JSON with asJSON) and notices
// along the way on notices.
func runSubmit(ctx context.Context, out, notices io.Writer, q *queue.Queue, req queue.Request, wait, asJSON bool, check artifactCheck) error {
	if !wait {
		dup, err := q.Submit(ctx, req)
		if err != nil {
			return err
		}
		n, _ := req.Normalize()
		if asJSON {
			return json.NewEncoder(out).Encode(map[string]any{"image": req.Image, "key": n.IdempotencyKey(), "duplicate": dup})
		}
		if dup {
			fmt.Fprintf(out, "%s: already queued (duplicate within the window)\n", req.Image)
		} else {
			fmt.Fprintf(out, "%s: queued\n", req.Image)
		}
		return nil
	}
	res, _, err := q.SubmitAndWait(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no result before the timeout: %w", req.Image, ctx.Err())
		}
		return err
	}
	// A success is reported only for artifacts that exist: the answer may
	// come from the duplicate window, about an artifact deleted since (e.g.
	// a re-seeded dev registry). Then the image is converted again.
	if check != nil && res.Succeeded() && len(res.ArtifactDigests) > 0 {
		missing, err := check(ctx, req.Image, res.ArtifactDigests)
		if err != nil {
			return err
		}
		if len(missing) > 0 && !req.Force {
			fmt.Fprintf(notices, "%s: recorded artifact %s is not in the registry; converting again (--force)\n", req.Image, strings.Join(missing, ", "))
			req.Force = true
			if res, _, err = q.SubmitAndWait(ctx, req); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("%s: no result before the timeout: %w", req.Image, ctx.Err())
				}
				return err
			}
			if res.Succeeded() {
				missing, err = check(ctx, req.Image, res.ArtifactDigests)
				if err != nil {
					return err
				}
			}
		}
		if len(missing) > 0 && res.Succeeded() {
			return &exitError{code: 1, err: fmt.Errorf("%s: recorded as converted, but artifact %s is not in the registry", req.Image, strings.Join(missing, ", "))}
		}
	}
	if asJSON {
		if err := json.NewEncoder(out).Encode(res); err != nil {
			return err
		}
	} else if res.Succeeded() {
		fmt.Fprintf(out, "%s: converted (layers built %d, cached %d, attempts %d)\n", req.Image, res.LayersBuilt, res.LayersCached, res.Attempts)
		for i, a := range res.ArtifactDigests {
			subj := ""
			if i < len(res.SubjectDigests) {
				subj = res.SubjectDigests[i]
			}
			fmt.Fprintf(out, "  %s -> artifact %s\n", subj, a)
		}
	}
	if !res.Succeeded() {
		return &exitError{code: 1, err: fmt.Errorf("%s: conversion failed (%s after %d attempts): %s", req.Image, res.Reason, res.Attempts, res.Error)}
	}
	return nil
}
