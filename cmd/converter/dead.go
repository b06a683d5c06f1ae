package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/queue"
)

func init() { registeredCommands = append(registeredCommands, newDeadCmd) }

func newDeadCmd(g *globalFlags) *cobra.Command {
	var nf natsClientFlags
	cmd := &cobra.Command{
		Use:   "dead",
		Short: "Inspect and re-queue dead-lettered conversion requests",
	}
	nf.register(cmd.PersistentFlags())
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters (sequence, reason, image, error)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withQueue(cmd, g, &nf, func(ctx context.Context, q *queue.Queue) error {
				return runDeadList(ctx, cmd.OutOrStdout(), q, asJSON)
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var all bool
	replay := &cobra.Command{
		Use:   "replay SEQ|--all",
		Short: "Re-queue a dead letter (by the sequence `dead list` shows) or all of them",
		Args: func(cmd *cobra.Command, args []string) error {
			if all != (len(args) == 0) || len(args) > 1 {
				return fmt.Errorf("give one sequence number or --all")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var seq uint64
			if !all {
				var err error
				if seq, err = strconv.ParseUint(args[0], 10, 64); err != nil || seq == 0 {
					return fmt.Errorf("sequence %q: want a positive integer from `converter dead list`", args[0])
				}
			}
			return withQueue(cmd, g, &nf, func(ctx context.Context, q *queue.Queue) error {
				return runDeadReplay(ctx, cmd.OutOrStdout(), q, seq, all)
			})
		},
	}
	replay.Flags().BoolVar(&all, "all", false, "re-queue every dead letter")
	cmd.AddCommand(list, replay)
	return cmd
}

func withQueue(cmd *cobra.Command, g *globalFlags, nf *natsClientFlags, f func(context.Context, *queue.Queue) error) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
	defer cancel()
	q, nc, err := nf.open(ctx, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	return f(ctx, q)
}

func runDeadList(ctx context.Context, out io.Writer, q *queue.Queue, asJSON bool) error {
	dead, err := q.Dead(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		type entry struct {
			Seq uint64 `json:"seq"`
			queue.DeadLetter
		}
		entries := make([]entry, 0, len(dead))
		for _, d := range dead {
			entries = append(entries, entry{d.Seq, d})
		}
		return json.NewEncoder(out).Encode(entries)
	}
	if len(dead) == 0 {
		fmt.Fprintln(out, "no dead letters")
		return nil
	}
	for _, d := range dead {
		img := "(unparseable message)"
		if d.Request != nil {
			img = d.Request.Image
		}
		fmt.Fprintf(out, "%d\t%s\t%s\tattempts=%d\t%s\t%s\n", d.Seq, d.Time.Format(time.RFC3339), d.Reason, d.Attempts, img, d.Error)
	}
	return nil
}

func runDeadReplay(ctx context.Context, out io.Writer, q *queue.Queue, seq uint64, all bool) error {
	if all {
		n, err := q.ReplayAll(ctx)
		fmt.Fprintf(out, "re-queued %d dead letters\n", n)
		return err
	}
	if err := q.Replay(ctx, seq); err != nil {
		return err
	}
	fmt.Fprintf(out, "re-queued dead letter %d\n", seq)
	return nil
}
