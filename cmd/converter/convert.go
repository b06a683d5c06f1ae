package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/progress"
	"github.com/cimconv/cimconv/internal/registry"
)

func init() { registeredCommands = append(registeredCommands, newConvertCmd) }

func newConvertCmd(g *globalFlags) *cobra.Command {
	var (
		rf        registryFlags
		bf        buildFlags
		platform  string
		osVersion string
		force     bool
		output    string
		jsonOut   bool
	)
	cmd := &cobra.Command{
		Use:   "convert IMAGE",
		Short: "Convert a Windows image into its CIM chain and push it as an artifact referring to the image",
		Long: `Resolve IMAGE (tag or digest; an index selects its Windows manifests), build the CIM
chain of every selected manifest, and push it to the image's repository as an OCI
artifact whose subject is the image manifest. Layers already in the chain cache are
reused; an image that already has a matching artifact is skipped unless --force.

With --output DIR the artifact is written as an OCI layout instead of pushed (a dry run).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			p, err := v1.ParsePlatform(platform)
			if err != nil {
				return fmt.Errorf("--platform %q: %w", platform, err)
			}
			policy, err := registry.ParseOSVersionPolicy(osVersion)
			if err != nil {
				return fmt.Errorf("--os-version: %w", err)
			}
			pr := progress.New(os.Stderr, !jsonOut)
			defer pr.Close()
			reg, err := rf.client(log)
			if err != nil {
				return err
			}
			c, err := bf.converter(log, reg, convert.WithProgress(convertProgress(pr)))
			if err != nil {
				return err
			}
			res, err := c.Convert(cmd.Context(), convert.Request{
				Image: args[0], Platform: *p, OSVersion: policy, Force: force, OutputDir: output,
			})
			if err != nil {
				return err
			}
			if jsonOut {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			for _, im := range res.Images {
				state := "pushed"
				switch {
				case im.Existing:
					state = "exists"
				case output != "":
					state = "written to " + output
				}
				built := 0
				for _, l := range im.Layers {
					if l.Built {
						built++
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\t%s\t%s\t%d/%d layers built\n", im.Subject, im.OSVersion, im.Artifact, state, built, len(im.Layers))
			}
			return nil
		},
	}
	rf.register(cmd.Flags())
	bf.register(cmd.Flags())
	cmd.Flags().StringVar(&platform, "platform", "windows/amd64", "os/architecture to convert")
	cmd.Flags().StringVar(&osVersion, "os-version", "all", "which Windows os.version of an index: all, a build (20348), a version (10.0.20348.2031) or compatible:BUILD")
	cmd.Flags().BoolVar(&force, "force", false, "convert even if a matching artifact exists")
	cmd.Flags().StringVar(&output, "output", "", "write the artifact as an OCI layout in this directory instead of pushing")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON on stdout")
	return cmd
}

// convertProgress renders converter events. Layers are fetched and built
// concurrently (and an index has several images), so the line shows the
// latest layer's bytes and the total over every layer seen.
func convertProgress(pr *progress.Printer) func(convert.Event) {
	type layerKey struct {
		subject string
		layer   int
	}
	var mu sync.Mutex
	seen := map[layerKey]int64{}
	var total int64
	return func(e convert.Event) {
		switch {
		case e.Cached:
			pr.Println("layer %d/%d reused from the chain cache (%s)", e.Layer, e.Layers, short(e.ChainID))
		case e.Layer > 0:
			mu.Lock()
			k := layerKey{e.Subject, e.Layer}
			total += e.Bytes - seen[k]
			seen[k] = e.Bytes
			all := total
			mu.Unlock()
			pr.Update("layer %d/%d: %s fetched and built (%s in all)", e.Layer, e.Layers, progress.Bytes(e.Bytes), progress.Bytes(all))
		}
	}
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
