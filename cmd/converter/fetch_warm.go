package main

import (
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/snapshotter"
	"github.com/cimconv/cimconv/internal/trust"
)

// warm is `converter fetch --root`.
func warm(cmd *cobra.Command, reg *registry.Client, ver trust.Verifier, image, root, osBuild string, p v1.Platform, jsonOut bool) error {
	opt := snapshotter.WarmOptions{Root: root, NodeBuild: osBuild, Platform: p, Verifier: ver}
	res, err := snapshotter.Warm(cmd.Context(), reg, image, opt)
	if err != nil {
		return err
	}
	if jsonOut {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "artifact %s for %s: %d layers cached, %d already cached in %s\n", res.Artifact, res.Subject, len(res.Cached), len(res.Present), root)
	return nil
}
