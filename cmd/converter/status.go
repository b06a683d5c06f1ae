package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/queue"
)

func init() { registeredCommands = append(registeredCommands, newStatusCmd) }

func newStatusCmd(g *globalFlags) *cobra.Command {
	var (
		nf     natsClientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status IMAGE|DIGEST",
		Short: "Show the conversion state of an image (queued, running, failed, succeeded, dead)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			q, nc, err := nf.open(ctx, log)
			if err != nil {
				return err
			}
			defer nc.Close()
			return runStatus(ctx, cmd.OutOrStdout(), q, args[0], asJSON)
		},
	}
	nf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func runStatus(ctx context.Context, out io.Writer, q *queue.Queue, image string, asJSON bool) error {
	st, err := q.Status(ctx, image)
	if errors.Is(err, queue.ErrNotFound) {
		return &exitError{code: 1, err: fmt.Errorf("%s: no conversion recorded", image)}
	}
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(out).Encode(st)
	}
	fmt.Fprintf(out, "%s: %s (attempts %d, updated %s)\n", st.Image, st.State, st.Attempts, st.Updated.Format(time.RFC3339))
	if st.Detail != "" {
		fmt.Fprintf(out, "  %s\n", st.Detail)
	}
	if len(st.Artifacts) > 0 {
		fmt.Fprintf(out, "  artifacts: %s\n", strings.Join(st.Artifacts, ", "))
	}
	if st.LastError != "" {
		fmt.Fprintf(out, "  last error (%s): %s\n", st.Reason, st.LastError)
	}
	return nil
}
