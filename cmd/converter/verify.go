package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/fetch"
)

func init() { registeredCommands = append(registeredCommands, newVerifyCmd) }

// verifyReport is `converter verify --json`.
type verifyReport struct {
	Image    string       `json:"image"`
	Trusted  bool         `json:"trusted"`
	Found    *fetch.Found `json:"found,omitempty"`
	Error    string       `json:"error,omitempty"`
	KeyFiles []string     `json:"trustedKeyFiles,omitempty"`
}

func newVerifyCmd(g *globalFlags) *cobra.Command {
	var (
		rf       registryFlags
		tf       trustFlags
		osBuild  string
		platform string
		jsonOut  bool
	)
	cmd := &cobra.Command{
		Use:   "verify IMAGE --trusted-key FILE",
		Short: "Node side: find IMAGE's cimconv artifact and show every trust check, without fetching CIMs",
		Long: `Find IMAGE's cimconv artifacts as fetch does (newest compatible with --os-build first),
verify each until one is signed by a trusted key and bound to the image, and print the
artifact, its signer's key id and every check made (for refused candidates too).
Exit status 1 when no artifact is trusted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, p, reg, ver, err := nodeSide(g, &rf, &tf, platform)
			if err != nil {
				return err
			}
			found, ferr := fetch.New(reg, log).Find(cmd.Context(), args[0], fetch.Options{NodeBuild: osBuild, Platform: *p, Verifier: ver})
			rep := verifyReport{Image: args[0], Trusted: ferr == nil, Found: found, KeyFiles: tf.keys}
			if ferr != nil {
				rep.Error = ferr.Error()
			}
			if jsonOut {
				if err := json.NewEncoder(cmd.OutOrStdout()).Encode(rep); err != nil {
					return err
				}
			} else {
				printVerify(cmd.OutOrStdout(), rep)
			}
			if ferr != nil {
				if jsonOut {
					return &exitError{code: 1, err: ferr}
				}
				return ferr
			}
			return nil
		},
	}
	rf.register(cmd.Flags())
	tf.register(cmd.Flags())
	cmd.Flags().StringVar(&osBuild, "os-build", "", "the node's Windows build (e.g. 20348 or 10.0.20348.2340); default: any")
	cmd.Flags().StringVar(&platform, "platform", "windows/amd64", "os/architecture")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the report as JSON on stdout")
	return cmd
}

func printVerify(w io.Writer, rep verifyReport) {
	f := rep.Found
	if f == nil {
		fmt.Fprintf(w, "image %s: no artifact examined\n", rep.Image)
		return
	}
	fmt.Fprintf(w, "image      %s\n", f.Subject)
	const detailed = 10
	for i, r := range f.Refused {
		if i == detailed {
			fmt.Fprintf(w, "... %d more refused (--json lists all)\n", len(f.Refused)-detailed)
			break
		}
		fmt.Fprintf(w, "REFUSED    %s\n", r.Artifact)
		for _, c := range r.Checks {
			fmt.Fprintf(w, "    %s\n", c)
		}
		fmt.Fprintf(w, "    reason: %s\n", r.Reason)
	}
	if !rep.Trusted {
		fmt.Fprintf(w, "NOT TRUSTED: %d compatible artifacts, %d refused\n", f.Candidates, len(f.Refused))
		return
	}
	fmt.Fprintf(w, "artifact   %s\n", f.Artifact.Digest)
	if f.Trust.Signed {
		fmt.Fprintf(w, "signer     %s\n", f.Trust.KeyID)
		fmt.Fprintf(w, "signature  %s\n", f.Trust.Signature)
	} else {
		fmt.Fprintln(w, "signer     none: UNSIGNED, accepted only because of --trust-unsigned")
	}
	fmt.Fprintln(w, "checks")
	for _, c := range f.Trust.Checks {
		fmt.Fprintf(w, "    %s\n", c)
	}
	fmt.Fprintf(w, "TRUSTED (%d compatible artifacts, %d refused before this one)\n", f.Candidates, len(f.Refused))
}
