package chart_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// docCommands returns the `helm install|upgrade ... ./charts/cimconv ...`
// commands of a Markdown file, with backslash continuations joined.
func docCommands(markdown string) []string {
	var cmds []string
	var cur strings.Builder
	inCode := false
	for _, line := range strings.Split(markdown, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			inCode = !inCode
			cur.Reset()
			continue
		}
		if !inCode {
			continue
		}
		if cur.Len() == 0 && !strings.HasPrefix(trimmed, "helm install ") && !strings.HasPrefix(trimmed, "helm upgrade ") {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(cont)
			continue
		}
		cur.WriteString(trimmed)
		if cmd := cur.String(); strings.Contains(cmd, "./charts/cimconv ") {
			cmds = append(cmds, cmd)
		}
		cur.Reset()
	}
	return cmds
}

// shellWords splits a command line the way a POSIX shell would for the
// simple quoting the docs use (single and double quotes, no expansions).
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote in %q", quote, line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// TestDeployDocCommands runs every `helm install`/`helm upgrade` command of
// docs/deploy.md against this chart as `helm template` and decodes the result:
// the documented commands must work as written.
func TestDeployDocCommands(t *testing.T) {
	helm := helmBinary(t)
	b, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds := docCommands(string(b))
	if len(cmds) < 4 {
		t.Fatalf("found %d helm commands for ./charts/cimconv in docs/deploy.md, want at least 4", len(cmds))
	}
	for _, cmd := range cmds {
		t.Run(strings.Join(strings.Fields(cmd)[:3], " "), func(t *testing.T) {
			words, err := shellWords(cmd)
			if err != nil {
				t.Fatal(err)
			}
			// helm install|upgrade RELEASE ./charts/cimconv FLAGS...
			if len(words) < 4 || words[3] != "./charts/cimconv" {
				t.Fatalf("unexpected command shape: %q", cmd)
			}
			var args []string
			for _, w := range words[4:] {
				if w == "--reuse-values" { // upgrade-only; template starts from the defaults
					continue
				}
				args = append(args, w)
			}
			out, err := helmTemplate(t, helm, args...)
			if err != nil {
				t.Fatalf("%s\n%v", cmd, err)
			}
			r, err := decodeAll(out)
			if err != nil {
				t.Fatal(err)
			}
			if r.deploymentByComponent("worker") == nil {
				t.Error("no worker Deployment")
			}
			if strings.Contains(cmd, "webhook.enabled=true") && r.deploymentByComponent("webhook") == nil {
				t.Error("webhook.enabled=true but no webhook Deployment")
			}
			if strings.Contains(cmd, "autoscaling.keda.enabled=true") && len(r.scaledObjects) != 1 {
				t.Error("autoscaling.keda.enabled=true but no ScaledObject")
			}
			if strings.Contains(cmd, "worker.hostProcess.enabled=true") && !r.deploymentByComponent("worker").Spec.Template.Spec.HostNetwork {
				t.Error("worker.hostProcess.enabled=true but the worker is not a HostProcess pod")
			}
		})
	}
}

func TestShellWords(t *testing.T) {
	cases := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: `helm install x ./c --set a=b`, want: []string{"helm", "install", "x", "./c", "--set", "a=b"}},
		{in: `--set 'k={a,b}'  --set "x=y z"`, want: []string{"--set", "k={a,b}", "--set", "x=y z"}},
		{in: `a'b'"c"`, want: []string{"abc"}},
		{in: `''`, want: []string{""}},
		{in: `'open`, wantErr: true},
	}
	for _, tc := range cases {
		got, err := shellWords(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("shellWords(%q) error = %v", tc.in, err)
			continue
		}
		if !tc.wantErr && strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("shellWords(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
