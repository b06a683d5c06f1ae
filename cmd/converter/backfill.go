package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/progress"
	"github.com/cimconv/cimconv/internal/registry"
)

func init() { registeredCommands = append(registeredCommands, newBackfillCmd) }

// backfillLine is one line of `backfill --json`.
type backfillLine struct {
	Tag    string                `json:"tag"`
	Status string                `json:"status"` // converted | existing | skipped | failed
	Reason string                `json:"reason,omitempty"`
	Images []convert.ImageResult `json:"images,omitempty"`
}

func newBackfillCmd(g *globalFlags) *cobra.Command {
	var (
		rf        registryFlags
		bf        buildFlags
		tags      string
		osVersion string
		jsonOut   bool
	)
	cmd := &cobra.Command{
		Use:   "backfill REPO",
		Short: "Convert every Windows tag of a repository that has no artifact yet",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if _, err := path.Match(tags, ""); err != nil {
				return fmt.Errorf("--tags %q: %w", tags, err)
			}
			repo, err := name.NewRepository(args[0], name.Insecure)
			if err != nil {
				return fmt.Errorf("repository %q: %w", args[0], err)
			}
			policy, err := registry.ParseOSVersionPolicy(osVersion)
			if err != nil {
				return fmt.Errorf("--os-version: %w", err)
			}
			reg, err := rf.client(log)
			if err != nil {
				return err
			}
			pr := progress.New(os.Stderr, !jsonOut)
			defer pr.Close()
			c, err := bf.converter(log, reg, convert.WithProgress(convertProgress(pr)))
			if err != nil {
				return err
			}
			all, err := reg.ListTags(cmd.Context(), repo)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			failed := 0
			for _, tag := range all {
				if ok, _ := path.Match(tags, tag); !ok {
					continue
				}
				if err := cmd.Context().Err(); err != nil {
					return err
				}
				line := backfillLine{Tag: tag}
				res, err := c.Convert(cmd.Context(), convert.Request{Image: repo.Tag(tag).String(), Platform: v1.Platform{OS: "windows", Architecture: "amd64"}, OSVersion: policy})
				switch {
				case errors.Is(err, registry.ErrNotWindows) || errors.Is(err, registry.ErrNoMatch):
					line.Status, line.Reason = "skipped", err.Error()
				case err != nil:
					line.Status, line.Reason = "failed", err.Error()
					failed++
				default:
					line.Status, line.Images = "converted", res.Images
					existing := true
					for _, im := range res.Images {
						existing = existing && im.Existing
					}
					if existing {
						line.Status = "existing"
					}
				}
				if jsonOut {
					if err := enc.Encode(line); err != nil {
						return err
					}
				} else {
					pr.Println("%s:%s\t%s\t%s", repo, tag, line.Status, line.Reason)
				}
			}
			if failed > 0 {
				return fmt.Errorf("backfill %s: %d tags failed", repo, failed)
			}
			return nil
		},
	}
	rf.register(cmd.Flags())
	bf.register(cmd.Flags())
	cmd.Flags().StringVar(&tags, "tags", "*", "only tags matching this glob")
	cmd.Flags().StringVar(&osVersion, "os-version", "all", "which Windows os.version of an index (see convert --help)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON object per tag on stdout")
	return cmd
}
