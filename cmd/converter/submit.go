package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/queue"
)

func init() { registeredCommands = append(registeredCommands, newSubmitCmd) }

// natsClientFlags connect the client commands (submit, status, dead) to the
// service's NATS.
type natsClientFlags struct {
	url, creds string
}

func (f *natsClientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "nats-url", envOr("CIMCONV_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (CIMCONV_NATS_URL)")
	fs.StringVar(&f.creds, "nats-creds", envOr("CIMCONV_NATS_CREDS", ""), "NATS credentials file (CIMCONV_NATS_CREDS)")
}

// open binds to the provisioned queue without changing it.
func (f *natsClientFlags) open(ctx context.Context, log *zap.Logger) (*queue.Queue, *nats.Conn, error) {
	nc, err := queue.Connect(ctx, f.url, queue.WithName("cimconv-cli"), queue.WithCredsFile(f.creds), queue.WithConnLogger(log))
	if err != nil {
		return nil, nil, err
	}
	q, err := queue.Open(ctx, nc, queue.WithProvision(false), queue.WithLogger(log))
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
			return runSubmit(ctx, cmd.OutOrStdout(), q, req, wait, asJSON)
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
	return cmd
}

func runSubmit(ctx context.Context, out io.Writer, q *queue.Queue, req queue.Request, wait, asJSON bool) error {
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
