package chart_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// dockerInstructions returns the instructions of a Dockerfile (continuations
// joined, comments dropped) as [keyword, rest] pairs.
func dockerInstructions(t *testing.T, path string) [][2]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	escape := `\`
	var out [][2]string
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "# escape=") {
			escape = strings.TrimPrefix(trimmed, "# escape=")
			continue
		}
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, escape); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(trimmed)
		kw, rest, _ := strings.Cut(cur.String(), " ")
		out = append(out, [2]string{strings.ToUpper(kw), strings.TrimSpace(rest)})
		cur.Reset()
	}
	return out
}

// lastStage returns the instructions after the last FROM.
func lastStage(ins [][2]string) [][2]string {
	for i := len(ins) - 1; i >= 0; i-- {
		if ins[i][0] == "FROM" {
			return ins[i:]
		}
	}
	return nil
}

func instruction(ins [][2]string, kw string) []string {
	var out []string
	for _, in := range ins {
		if in[0] == kw {
			out = append(out, in[1])
		}
	}
	return out
}

// TestLinuxDockerfile keeps the webhook receiver image and the chart's
// webhook pods in step: static build, distroless base, the uid the pod runs
// as, and a default command that serves the webhook role beyond loopback.
func TestLinuxDockerfile(t *testing.T) {
	ins := dockerInstructions(t, "../../Dockerfile")
	builds := strings.Join(instruction(ins, "RUN"), "\n")
	for _, want := range []string{"CGO_ENABLED=0", "go build", "./cmd/converter"} {
		if !strings.Contains(builds, want) {
			t.Errorf("Dockerfile RUN steps lack %q", want)
		}
	}
	final := lastStage(ins)
	if from := instruction(final, "FROM"); len(from) != 1 || !strings.Contains(strings.Join(instruction(ins, "ARG"), " "), "distroless/static") {
		t.Errorf("final stage FROM %q: want the distroless/static base", from)
	}
	user := instruction(final, "USER")
	if len(user) != 1 || user[0] != "65532:65532" {
		t.Errorf("Dockerfile USER %q, want 65532:65532", user)
	}
	var entry, cmd []string
	if e := instruction(final, "ENTRYPOINT"); len(e) == 1 {
		_ = json.Unmarshal([]byte(e[0]), &entry)
	}
	if c := instruction(final, "CMD"); len(c) == 1 {
		_ = json.Unmarshal([]byte(c[0]), &cmd)
	}
	if len(entry) != 1 || !strings.HasSuffix(entry[0], "/converter") {
		t.Errorf("ENTRYPOINT %q: want the converter binary (exec form)", entry)
	}
	if len(cmd) == 0 || cmd[0] != "serve" || !strings.Contains(strings.Join(cmd, " "), "--role=webhook") {
		t.Errorf("CMD %q: want serve --role=webhook", cmd)
	}
	for _, a := range cmd {
		if l, ok := strings.CutPrefix(a, "--listen="); ok && strings.HasPrefix(l, "127.") {
			t.Errorf("CMD listens on %s: unreachable from outside the container", l)
		}
	}
	// The command line parses with the real converter.
	checkServeCommand(t, &corev1.Container{Name: "Dockerfile CMD", Args: cmd})

	// The chart runs the webhook pods as the image's user.
	out, err := helmTemplate(t, helmBinary(t), "--set", "webhook.enabled=true", "--set", "webhook.auth.secretName=s",
		"--set", "webhook.allowedRegistries={r.example.com}")
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	d := r.deploymentByComponent("webhook")
	if d == nil {
		t.Fatal("no webhook Deployment")
	}
	sc := d.Spec.Template.Spec.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.RunAsGroup == nil || *sc.RunAsGroup != 65532 {
		t.Errorf("webhook pod securityContext %+v: want runAsUser/runAsGroup 65532 (the image's USER)", sc)
	}
}

// TestWindowsDockerfile: the chart's HostProcess command names the path the
// Windows image installs the binary at.
func TestWindowsDockerfile(t *testing.T) {
	final := lastStage(dockerInstructions(t, "../../Dockerfile.windows"))
	copies := strings.Join(instruction(final, "COPY"), "\n")
	out, err := helmTemplate(t, helmBinary(t), "--set", "worker.hostProcess.enabled=true")
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	_, c := podSpecOf(t, r.deploymentByComponent("worker"))
	if len(c.Command) != 1 {
		t.Fatalf("HostProcess command %q", c.Command)
	}
	var cmd []string
	if cm := instruction(final, "CMD"); len(cm) == 1 {
		_ = json.Unmarshal([]byte(cm[0]), &cmd)
	}
	if len(cmd) == 0 || !slices.Contains(cmd, "--role=worker") {
		t.Errorf("Dockerfile.windows CMD %q: want serve --role=worker", cmd)
	}
	checkServeCommand(t, &corev1.Container{Name: "Dockerfile.windows CMD", Args: cmd})
	rel, ok := strings.CutPrefix(c.Command[0], `%CONTAINER_SANDBOX_MOUNT_POINT%\`)
	if !ok || !strings.Contains(copies, `C:\`+rel) {
		t.Errorf("HostProcess command %q: Dockerfile.windows does not install the binary there (COPY %q)", c.Command[0], copies)
	}
}
