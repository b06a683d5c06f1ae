package chart_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// expectedNATSURL is the URL the chart must give the converter for values v
// (see nats.url in values.yaml): the URL when set, else the service, fully
// qualified for HostProcess workers, which resolve with the node's DNS.
func expectedNATSURL(v values) string {
	if u := v.str("nats.url"); u != "" {
		return strings.ReplaceAll(u, "{{.Release.Name}}", releaseName)
	}
	svc := strings.ReplaceAll(v.str("nats.service"), "{{.Release.Name}}", releaseName)
	if v.boolean("worker.hostProcess.enabled") {
		return "nats://" + svc + "." + namespace + ".svc." + v.str("nats.clusterDomain") + ":4222"
	}
	return "nats://" + svc + ":4222"
}

// hcsshimPodAnnotations are the microsoft.com/ annotations about HostProcess
// that hcsshim v0.15.0 defines (pkg/annotations/annotations.go); neither it
// nor containerd reads any other (e.g. a "hostprocess-mount-behavior").
var hcsshimPodAnnotations = map[string]bool{
	"microsoft.com/hostprocess-container":         true,
	"microsoft.com/hostprocess-inherit-user":      true,
	"microsoft.com/hostprocess-rootfs-location":   true,
	"microsoft.com/disable-hostprocess-container": true,
}

// checkHcsshimAnnotations: the worker pod carries no microsoft.com/
// annotation that the runtime does not read.
func checkHcsshimAnnotations(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	for k := range d.Spec.Template.Annotations {
		if strings.HasPrefix(k, "microsoft.com/") && !hcsshimPodAnnotations[k] {
			t.Errorf("worker pod annotation %s is not one hcsshim reads", k)
		}
	}
}

func TestNATSURL(t *testing.T) {
	helm := helmBinary(t)
	hp := []string{"--set", "worker.hostProcess.enabled=true"}
	// --set would read the braces as a list: template the service in a file.
	svcFile := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(svcFile, []byte("nats:\n  service: '{{.Release.Name}}-nats'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := []string{"-f", svcFile}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"default: short service name", nil, "nats://nats:4222"},
		{"HostProcess: fully qualified", hp, "nats://nats.cimconv-test.svc.cluster.local:4222"},
		{"HostProcess, other cluster domain", append([]string{"--set", "nats.clusterDomain=k8s.example.internal"}, hp...), "nats://nats.cimconv-test.svc.k8s.example.internal:4222"},
		{"HostProcess, templated service", append(svc, hp...), "nats://cimconv-nats.cimconv-test.svc.cluster.local:4222"},
		{"templated service", svc, "nats://cimconv-nats:4222"},
		{"explicit URL wins", append([]string{"--set", "nats.url=tls://nats.example.com:4222"}, hp...), "tls://nats.example.com:4222"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := helmTemplate(t, helm, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			r, err := decodeAll(out)
			if err != nil {
				t.Fatal(err)
			}
			var got any
			for _, cm := range r.configMaps {
				if text, ok := cm.Data["config.yaml"]; ok {
					var cfg map[string]any
					if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
						t.Fatal(err)
					}
					got = cfg["nats-url"]
				}
			}
			if got != tt.want {
				t.Errorf("nats-url = %v, want %s", got, tt.want)
			}
			d := r.deploymentByComponent("worker")
			if d == nil {
				t.Fatal("no worker Deployment")
			}
			checkHcsshimAnnotations(t, d)
		})
	}
}
