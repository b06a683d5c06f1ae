package chart_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/service"
)

// renderCases are the value sets CI renders: the defaults and every optional
// feature switched on.
var renderCases = []struct {
	name  string
	files []string
}{
	{name: "default"},
	{name: "full", files: []string{"ci/full-values.yaml"}},
	{name: "hostpath-no-keda", files: []string{"testdata/hostpath-values.yaml"}},
}

func TestRenderedObjects(t *testing.T) {
	helm := helmBinary(t)
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			for _, f := range tc.files {
				args = append(args, "-f", f)
			}
			out, err := helmTemplate(t, helm, args...)
			if err != nil {
				t.Fatal(err)
			}
			r, err := decodeAll(out)
			if err != nil {
				t.Fatal(err)
			}
			v := loadValues(t, tc.files...)
			checkWorker(t, r, v)
			checkWebhook(t, r, v)
			checkConfig(t, r, v)
			checkServicesSelectPods(t, r)
			checkAutoscaling(t, r, v)
			checkServiceMonitor(t, r, v)
			checkPrometheusRule(t, r, v)
			checkPDBs(t, r)
			checkDashboardConfigMap(t, r, v)
		})
	}
}

func podSpecOf(t *testing.T, d *appsv1.Deployment) (*corev1.PodSpec, *corev1.Container) {
	t.Helper()
	spec := &d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: want 1 container, got %d", d.Name, len(spec.Containers))
	}
	return spec, &spec.Containers[0]
}

// checkLoadedNATS: the NATS settings converter serve ends up with.
func checkLoadedNATS(t *testing.T, cfg service.Config, v values) {
	t.Helper()
	if want := expectedNATSURL(v); cfg.NATSURL != want {
		t.Errorf("nats-url = %q, want %q", cfg.NATSURL, want)
	}
	if name := v.str("nats.credentials.secretName"); name != "" {
		secretFile(t, "nats-creds", cfg.NATSCreds, name, v.str("nats.credentials.key"))
	} else if cfg.NATSCreds != "" {
		t.Errorf("nats-creds %q without nats.credentials.secretName", cfg.NATSCreds)
	}
}

func checkWorker(t *testing.T, r *rendered, v values) {
	d := r.deploymentByComponent("worker")
	if d == nil {
		t.Fatal("no worker Deployment")
	}
	spec, c := podSpecOf(t, d)
	checkHcsshimAnnotations(t, d)

	// Scheduling: Windows nodes of the configured builds, tolerating the taints.
	if got := spec.NodeSelector["kubernetes.io/os"]; got != "windows" {
		t.Errorf("worker nodeSelector kubernetes.io/os = %q, want windows", got)
	}
	requireNodeAffinity(t, spec, "kubernetes.io/os", []string{"windows"})
	if builds := v.strings("worker.windowsBuilds"); len(builds) > 0 {
		requireNodeAffinity(t, spec, "node.kubernetes.io/windows-build", builds)
	}
	if want := len(v.get("worker.tolerations").([]any)); len(spec.Tolerations) != want {
		t.Errorf("worker tolerations: got %d, want %d", len(spec.Tolerations), want)
	}
	if got, want := spec.TerminationGracePeriodSeconds, int64(v.integer("worker.terminationGracePeriodSeconds")); got == nil || *got != want {
		t.Errorf("worker terminationGracePeriodSeconds = %v, want %d", got, want)
	}
	// The converter must give up on in-flight work before Kubernetes kills it.
	grace, err := time.ParseDuration(envValue(c, service.EnvName("shutdown-grace")))
	if err != nil || grace <= 0 || grace >= time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second {
		t.Errorf("CIMCONV_SHUTDOWN_GRACE %q: want a duration below terminationGracePeriodSeconds %d (%v)",
			envValue(c, "CIMCONV_SHUTDOWN_GRACE"), *spec.TerminationGracePeriodSeconds, err)
	}
	// The worker-side registry allowlist (issue 9 #8).
	if got, want := envValue(c, service.EnvName("allowed-registries")), strings.Join(v.strings("worker.allowedRegistries"), ","); got != want {
		t.Errorf("worker %s = %q, want %q", service.EnvName("allowed-registries"), got, want)
	}
	if !slices.Contains(c.Args, "--role=worker") || len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Errorf("worker args %q: want serve --role=worker", c.Args)
	}

	checkProbes(t, d, c, v.integer("httpPort"))

	// Every variable is one the converter reads (a typo would be silently
	// ignored), and the flags parse with the real command.
	checkEnvKnown(t, c, v, "worker.extraEnv")
	checkServeCommand(t, c)
	dataDir := v.str("worker.dataDir.path")
	if v.boolean("worker.hostProcess.enabled") {
		dataDir = v.str("worker.hostProcess.dataDir")
	}
	if cfg, ok := loadServeConfig(t, r, spec, c); ok {
		for _, kv := range []struct{ key, got, want string }{
			{"role", cfg.Role, service.RoleWorker},
			{"builder", cfg.Builder, v.str("worker.builder")},
			{"cim-format", cfg.CimFormat, v.str("worker.cimFormat")},
			{"data-dir", cfg.DataDir, dataDir},
			// Chain cache and build directories default to data-dir\chains and
			// data-dir\work: on the data volume, not in the container layer.
			{"cache-dir", cfg.CacheDir, ""},
			{"work-dir", cfg.WorkDir, ""},
			{"shutdown-grace", cfg.ShutdownGrace.String(), (time.Duration(v.integer("worker.terminationGracePeriodSeconds")-60) * time.Second).String()},
			// Webhook secrets belong to the webhook pods only.
			{"webhook-token-file", cfg.WebhookTokenFile, ""},
			{"webhook-hmac-secret-file", cfg.WebhookHMACSecretFile, ""},
		} {
			if kv.got != kv.want {
				t.Errorf("worker %s = %q, want %q", kv.key, kv.got, kv.want)
			}
		}
		if name := v.str("registryCredentials.secretName"); name != "" {
			secretFile(t, "worker docker-config", cfg.DockerConfig, name, ".dockerconfigjson")
		} else if cfg.DockerConfig != "" {
			t.Errorf("worker docker-config %q without registryCredentials.secretName", cfg.DockerConfig)
		}
		// The signing key: a file of the signing Secret, workers only.
		if name := v.str("signing.secretName"); name != "" {
			secretFile(t, "worker signing-key", cfg.SigningKey, name, v.str("signing.key"))
		} else if cfg.SigningKey != "" {
			t.Errorf("worker signing-key %q without signing.secretName", cfg.SigningKey)
		}
		checkLoadedNATS(t, cfg, v)
	}

	// HostProcess: all-or-nothing per pod, host network, the configured account.
	hp := v.boolean("worker.hostProcess.enabled")
	podHP := spec.SecurityContext != nil && spec.SecurityContext.WindowsOptions != nil &&
		spec.SecurityContext.WindowsOptions.HostProcess != nil && *spec.SecurityContext.WindowsOptions.HostProcess
	if podHP != hp {
		t.Errorf("pod hostProcess = %v, want %v", podHP, hp)
	}
	if spec.HostNetwork != hp {
		t.Errorf("hostNetwork = %v, want %v (HostProcess pods must use the host network)", spec.HostNetwork, hp)
	}
	if hp {
		if got, want := *spec.SecurityContext.WindowsOptions.RunAsUserName, v.str("worker.hostProcess.runAsUserName"); got != want {
			t.Errorf("runAsUserName = %q, want %q", got, want)
		}
		sc := c.SecurityContext
		if sc == nil || sc.WindowsOptions == nil || sc.WindowsOptions.HostProcess == nil || !*sc.WindowsOptions.HostProcess {
			t.Error("HostProcess pod with a container that does not set hostProcess: Kubernetes rejects mixing")
		}
		if len(c.Command) != 1 || !strings.HasPrefix(c.Command[0], `%CONTAINER_SANDBOX_MOUNT_POINT%\`) {
			t.Errorf("HostProcess command %q: want the binary under %%CONTAINER_SANDBOX_MOUNT_POINT%%", c.Command)
		}
		aa := spec.Affinity.PodAntiAffinity
		if aa == nil || len(aa.RequiredDuringSchedulingIgnoredDuringExecution) == 0 {
			t.Error("HostProcess workers share the node's network: want required anti-affinity per node")
		}
		if want := "--data-dir=" + v.str("worker.hostProcess.dataDir"); !slices.Contains(c.Args, want) {
			t.Errorf("worker args %q: missing %q", c.Args, want)
		}
	} else {
		if c.SecurityContext != nil && c.SecurityContext.WindowsOptions != nil && c.SecurityContext.WindowsOptions.HostProcess != nil {
			t.Error("container sets hostProcess while worker.hostProcess.enabled is false")
		}
		if want := "--data-dir=" + v.str("worker.dataDir.path"); !slices.Contains(c.Args, want) {
			t.Errorf("worker args %q: missing %q", c.Args, want)
		}
		mountedVolume(t, spec, c, "data", v.str("worker.dataDir.path"))
	}

	// Secrets: registry credentials as a file named by CIMCONV_DOCKER_CONFIG.
	if name := v.str("registryCredentials.secretName"); name != "" {
		vol := volumeForSecret(t, spec, name)
		if vol == nil {
			t.Fatalf("no volume for registry Secret %q", name)
		}
		if len(vol.Secret.Items) != 1 || vol.Secret.Items[0].Key != ".dockerconfigjson" || vol.Secret.Items[0].Path != "config.json" {
			t.Errorf("registry Secret items %+v: want .dockerconfigjson -> config.json", vol.Secret.Items)
		}
		if mountFor(c, vol.Name) == nil {
			t.Fatalf("registry Secret volume %q not mounted", vol.Name)
		}
	}
	checkNATSWiring(t, spec, c, v)
}

func checkNATSWiring(t *testing.T, spec *corev1.PodSpec, c *corev1.Container, v values) {
	t.Helper()
	if name := v.str("nats.credentials.secretName"); name != "" {
		vol := volumeForSecret(t, spec, name)
		if vol == nil {
			t.Fatalf("%s: no volume for NATS creds Secret %q", c.Name, name)
		}
		m := mountFor(c, vol.Name)
		if m == nil {
			t.Fatalf("%s: NATS creds volume not mounted", c.Name)
		}
		want := "--nats-creds=" + joinPath(m.MountPath, v.str("nats.credentials.key"))
		if !slices.Contains(c.Args, want) {
			t.Errorf("%s args %q: missing %q", c.Name, c.Args, want)
		}
	}
	if name := v.str("nats.tls.secretName"); name != "" {
		vol := volumeForSecret(t, spec, name)
		if vol == nil {
			t.Fatalf("%s: no volume for NATS TLS Secret %q", c.Name, name)
		}
		m := mountFor(c, vol.Name)
		if m == nil {
			t.Fatalf("%s: NATS TLS volume not mounted", c.Name)
		}
		for env, key := range map[string]string{
			"CIMCONV_NATS_TLS_CA": "nats.tls.caKey", "CIMCONV_NATS_TLS_CERT": "nats.tls.certKey", "CIMCONV_NATS_TLS_KEY": "nats.tls.keyKey",
		} {
			want := ""
			if v.str(key) != "" && (env == "CIMCONV_NATS_TLS_CA" || v.str("nats.tls.certKey") != "" && v.str("nats.tls.keyKey") != "") {
				want = joinPath(m.MountPath, v.str(key))
			}
			if got := envValue(c, env); got != want {
				t.Errorf("%s %s = %q, want %q", c.Name, env, got, want)
			}
		}
	}
}

// joinPath joins with the separator the mount path already uses (Windows or Linux).
func joinPath(dir, name string) string {
	if strings.Contains(dir, `\`) {
		return dir + `\` + name
	}
	return dir + "/" + name
}

func checkWebhook(t *testing.T, r *rendered, v values) {
	d := r.deploymentByComponent("webhook")
	if !v.boolean("webhook.enabled") {
		if d != nil {
			t.Error("webhook Deployment rendered while webhook.enabled is false")
		}
		return
	}
	if d == nil {
		t.Fatal("webhook.enabled but no webhook Deployment")
	}
	spec, c := podSpecOf(t, d)
	if got := spec.NodeSelector["kubernetes.io/os"]; got != "linux" {
		t.Errorf("webhook nodeSelector kubernetes.io/os = %q, want linux", got)
	}
	if !slices.Contains(c.Args, "--role=webhook") {
		t.Errorf("webhook args %q: want --role=webhook", c.Args)
	}
	checkProbes(t, d, c, v.integer("httpPort"))
	checkNATSWiring(t, spec, c, v)
	checkEnvKnown(t, c, v, "webhook.extraEnv")
	checkServeCommand(t, c)

	// One token and/or HMAC secret for every endpoint, as files from the
	// auth Secret; the handler serve builds from them must enforce them.
	if cfg, ok := loadServeConfig(t, r, spec, c); ok {
		if cfg.Role != service.RoleWebhook {
			t.Errorf("webhook role = %q, want %q", cfg.Role, service.RoleWebhook)
		}
		if got, want := cfg.WebhookAllowedRegistries, v.strings("webhook.allowedRegistries"); !slices.Equal(got, want) {
			t.Errorf("webhook-allowed-registries = %q, want %q", got, want)
		}
		if cfg.WebhookInsecureNoAuth {
			t.Error("webhook-insecure-no-auth set in a cluster")
		}
		if cfg.SigningKey != "" {
			t.Errorf("webhook pods get the signing key %q; only workers sign", cfg.SigningKey)
		}
		secret := v.str("webhook.auth.secretName")
		var token, hmacSecret string
		for _, f := range []struct {
			what, path, key string
			into            *string
		}{
			{"webhook-token-file", cfg.WebhookTokenFile, v.str("webhook.auth.tokenKey"), &token},
			{"webhook-hmac-secret-file", cfg.WebhookHMACSecretFile, v.str("webhook.auth.hmacSecretKey"), &hmacSecret},
		} {
			if f.key == "" {
				if f.path != "" {
					t.Errorf("%s = %q, but its Secret key is not configured", f.what, f.path)
				}
				continue
			}
			secretFile(t, f.what, f.path, secret, f.key)
			*f.into = secret + "/" + f.key
		}
		checkLoadedNATS(t, cfg, v)
		// The role needs a writable data dir (serve prepares a chain cache
		// there even for the receiver): an emptyDir, the root fs being read-only.
		if m := mountFor(c, "data"); m == nil || m.MountPath != cfg.DataDir {
			t.Errorf("webhook data-dir %q is not the mounted data volume %+v", cfg.DataDir, m)
		}
		checkWebhookAuth(t, cfg, token, hmacSecret, v.strings("webhook.allowedRegistries"))
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("webhook pod must run as non-root")
	}

	for _, ing := range r.ingresses {
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				if !strings.HasPrefix(p.Path, "/webhooks") {
					t.Errorf("ingress exposes %q: only /webhooks/ may be public", p.Path)
				}
				svc := r.services[p.Backend.Service.Name]
				if svc == nil {
					t.Fatalf("ingress backend Service %q not rendered", p.Backend.Service.Name)
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == p.Backend.Service.Port.Name }) {
					t.Errorf("ingress backend port %q not on Service %s", p.Backend.Service.Port.Name, svc.Name)
				}
			}
		}
	}
	if v.boolean("webhook.ingress.enabled") && len(r.ingresses) != 1 {
		t.Errorf("webhook.ingress.enabled: got %d Ingresses, want 1", len(r.ingresses))
	}
}

// checkProbes: liveness on /healthz, readiness on /readyz, both on the port
// the converter listens on.
func checkProbes(t *testing.T, d *appsv1.Deployment, c *corev1.Container, port int) {
	t.Helper()
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no %s httpGet probe", d.Name, p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s: %s probe path %q, want %q", d.Name, p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := resolvePort(c, p.probe.HTTPGet.Port.String()); got != port {
			t.Errorf("%s: %s probe port %s resolves to %d, want %d", d.Name, p.name, p.probe.HTTPGet.Port.String(), got, port)
		}
	}
}

// resolvePort maps a named or numeric port to the container port number.
func resolvePort(c *corev1.Container, port string) int {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return int(p.ContainerPort)
		}
	}
	return -1
}

func checkConfig(t *testing.T, r *rendered, v values) {
	var cfgText string
	for _, cm := range r.configMaps {
		if s, ok := cm.Data["config.yaml"]; ok {
			cfgText = s
		}
	}
	if cfgText == "" {
		t.Fatal("no ConfigMap with config.yaml")
	}
	var cfg map[string]any
	if err := yaml.UnmarshalStrict([]byte(cfgText), &cfg); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	wantURL := expectedNATSURL(v)
	for key, want := range map[string]any{
		"listen":      fmt.Sprintf(":%d", v.integer("httpPort")),
		"nats-url":    wantURL,
		"concurrency": float64(v.integer("worker.concurrency")),
	} {
		if got := cfg[key]; got != want {
			t.Errorf("config.yaml %s = %v (%T), want %v", key, got, got, want)
		}
	}
	for k, val := range v.get("config").(map[string]any) {
		if fmt.Sprint(cfg[k]) != fmt.Sprint(val) {
			t.Errorf("config.yaml %s = %v, want %v from values.config", k, cfg[k], val)
		}
	}
	// `converter serve` refuses a config file with an unknown key.
	for k := range cfg {
		if !slices.Contains(serveConfigKeys, k) {
			t.Errorf("config.yaml key %q is not a `converter serve` config key", k)
		}
	}
}

// checkServicesSelectPods: every Service selects the pods of exactly one
// Deployment, on a port name those pods declare.
func checkServicesSelectPods(t *testing.T, r *rendered) {
	for _, svc := range r.services {
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var matched []*appsv1.Deployment
		for _, d := range r.deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				matched = append(matched, d)
			}
		}
		if len(matched) != 1 {
			t.Errorf("Service %s selects %d Deployments, want 1", svc.Name, len(matched))
			continue
		}
		_, c := podSpecOf(t, matched[0])
		for _, p := range svc.Spec.Ports {
			if resolvePort(c, p.TargetPort.String()) < 0 {
				t.Errorf("Service %s targetPort %s not declared by %s", svc.Name, p.TargetPort.String(), matched[0].Name)
			}
		}
	}
}

func checkAutoscaling(t *testing.T, r *rendered, v values) {
	worker := r.deploymentByComponent("worker")
	if !v.boolean("autoscaling.keda.enabled") {
		if len(r.scaledObjects) != 0 {
			t.Error("ScaledObject rendered while autoscaling.keda.enabled is false")
		}
		if worker.Spec.Replicas == nil || int(*worker.Spec.Replicas) != v.integer("worker.replicas") {
			t.Errorf("worker replicas = %v, want %d", worker.Spec.Replicas, v.integer("worker.replicas"))
		}
		return
	}
	if worker.Spec.Replicas != nil {
		t.Error("worker Deployment sets replicas while KEDA owns them (every upgrade would reset the scale)")
	}
	if len(r.scaledObjects) != 1 {
		t.Fatalf("got %d ScaledObjects, want 1", len(r.scaledObjects))
	}
	for _, so := range r.scaledObjects {
		ref := so.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != worker.Name {
			t.Errorf("ScaledObject targets %s %s, want Deployment %s", ref.Kind, ref.Name, worker.Name)
		}
		if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
			t.Fatalf("ScaledObject triggers %+v: want one nats-jetstream trigger", so.Spec.Triggers)
		}
		md := so.Spec.Triggers[0].Metadata
		for _, k := range []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} {
			if md[k] == "" {
				t.Errorf("nats-jetstream trigger without %s", k)
			}
		}
		if md["stream"] != v.str("autoscaling.keda.stream") || md["consumer"] != v.str("autoscaling.keda.consumer") {
			t.Errorf("trigger on %s/%s, want %s/%s", md["stream"], md["consumer"], v.str("autoscaling.keda.stream"), v.str("autoscaling.keda.consumer"))
		}
		if strings.Contains(md["natsServerMonitoringEndpoint"], "{{") {
			t.Errorf("monitoring endpoint not rendered: %q", md["natsServerMonitoringEndpoint"])
		}
		if got := so.Spec.MaxReplicaCount; got == nil || int(*got) != v.integer("autoscaling.keda.maxReplicas") {
			t.Errorf("maxReplicaCount = %v, want %d", got, v.integer("autoscaling.keda.maxReplicas"))
		}
	}
}

func checkServiceMonitor(t *testing.T, r *rendered, v values) {
	if !v.boolean("serviceMonitor.enabled") {
		if len(r.serviceMonitors) != 0 {
			t.Error("ServiceMonitor rendered while serviceMonitor.enabled is false")
		}
		return
	}
	if len(r.serviceMonitors) != 1 {
		t.Fatalf("got %d ServiceMonitors, want 1", len(r.serviceMonitors))
	}
	for _, sm := range r.serviceMonitors {
		sel, err := metav1LabelSelector(sm)
		if err != nil {
			t.Fatal(err)
		}
		scraped := map[string]bool{}
		for _, svc := range r.services {
			if !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			scraped[svc.Spec.Selector["app.kubernetes.io/component"]] = true
			for _, ep := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor port %q not on Service %s", ep.Port, svc.Name)
				}
				if ep.Path != "/metrics" {
					t.Errorf("ServiceMonitor path %q, want /metrics", ep.Path)
				}
			}
		}
		if !scraped["worker"] {
			t.Error("ServiceMonitor does not select the worker Service")
		}
		if v.boolean("webhook.enabled") && !scraped["webhook"] {
			t.Error("ServiceMonitor does not select the webhook Service")
		}
		for k, want := range v.get("serviceMonitor.labels").(map[string]any) {
			if sm.Metadata.Labels[k] != want {
				t.Errorf("ServiceMonitor label %s = %q, want %v", k, sm.Metadata.Labels[k], want)
			}
		}
	}
}

func checkPDBs(t *testing.T, r *rendered) {
	for _, pdb := range r.pdbs {
		sel, err := labelSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, d := range r.deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("PodDisruptionBudget %s covers %d Deployments, want 1", pdb.Name, n)
		}
	}
	if r.pdbs[r.deploymentByComponent("worker").Name] == nil {
		t.Error("no PodDisruptionBudget for the workers")
	}
}

func checkDashboardConfigMap(t *testing.T, r *rendered, v values) {
	var found bool
	for _, cm := range r.configMaps {
		raw, ok := cm.Data["cimconv.json"]
		if !ok {
			continue
		}
		found = true
		if got := cm.Labels[v.str("dashboard.label")]; got != v.str("dashboard.labelValue") {
			t.Errorf("dashboard ConfigMap label %s = %q, want %q", v.str("dashboard.label"), got, v.str("dashboard.labelValue"))
		}
		want, err := os.ReadFile("dashboards/cimconv.json")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(raw) != strings.TrimSpace(string(want)) {
			t.Error("dashboard ConfigMap differs from dashboards/cimconv.json")
		}
		if !json.Valid([]byte(raw)) {
			t.Error("dashboard ConfigMap holds invalid JSON")
		}
	}
	if found != v.boolean("dashboard.enabled") {
		t.Errorf("dashboard ConfigMap rendered = %v, dashboard.enabled = %v", found, v.boolean("dashboard.enabled"))
	}
}

// TestKEDAQueueNames: the scaler watches the stream and consumer the
// converter provisions (internal/queue); the names are not configurable there.
func TestKEDAQueueNames(t *testing.T) {
	v := loadValues(t)
	if got := v.str("autoscaling.keda.stream"); got != queue.StreamName {
		t.Errorf("autoscaling.keda.stream = %q, want %q (internal/queue)", got, queue.StreamName)
	}
	if got := v.str("autoscaling.keda.consumer"); got != queue.ConsumerName {
		t.Errorf("autoscaling.keda.consumer = %q, want %q (internal/queue)", got, queue.ConsumerName)
	}
}

// TestRejectedValues: values the chart must refuse at render time, each with
// the message that tells the user what to fix.
func TestRejectedValues(t *testing.T) {
	helm := helmBinary(t)
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"misspelt key", []string{"-f", "testdata/bad-values.yaml"}, "additional properties 'concurency' not allowed"},
		{"wrong type", []string{"--set-string", "worker.concurrency=two"}, "/worker/concurrency"},
		{"chart-owned config key", []string{"--set", "config.nats-url=nats://x:4222"}, "additional properties 'nats-url' not allowed"},
		{"chart-owned config key (worker.builder)", []string{"--set", "config.builder=auto"}, "additional properties 'builder' not allowed"},
		{"webhook secret through config", []string{"--set", "config.webhook-token-file=/t"}, "additional properties 'webhook-token-file' not allowed"},
		{"unknown config key", []string{"--set", "config.nats-replica=3"}, "additional properties 'nats-replica' not allowed"},
		{"nats-replicas above 5", []string{"--set", "config.nats-replicas=7"}, "/config/nats-replicas"},
		{"unknown cim format", []string{"--set", "worker.cimFormat=wim"}, "/worker/cimFormat"},
		{"config duration without unit", []string{"--set", "config.ack-wait=30"}, "/config/ack-wait"},
		{"config max-deliver zero", []string{"--set", "config.max-deliver=0"}, "/config/max-deliver"},
		{"unknown builder", []string{"--set", "worker.builder=cimfs"}, "/worker/builder"},
		{"allowlist entry as URL", []string{"--set", "webhook.allowedRegistries={https://r.example.com}"}, "/webhook/allowedRegistries/0"},
		{"grace too short", []string{"--set", "worker.terminationGracePeriodSeconds=30"}, "terminationGracePeriodSeconds"},
		{"hostProcess data dir not a Windows path", []string{"--set", "worker.hostProcess.dataDir=/var/lib/cimconv"}, "/worker/hostProcess/dataDir"},
		{"per-endpoint webhook settings", []string{"--set", "webhook.endpoints={harbor}"}, "additional properties 'endpoints' not allowed"},
		{"webhook auth without keys", []string{"--set", "webhook.enabled=true", "--set", "webhook.auth.secretName=s", "--set", "webhook.auth.tokenKey=", "--set", "webhook.allowedRegistries={r.example.com}"}, "set tokenKey and/or hmacSecretKey"},
		{"webhook auth key with a slash", []string{"--set", "webhook.auth.tokenKey=a/b"}, "/webhook/auth/tokenKey"},
		{"webhook without auth", []string{"--set", "webhook.enabled=true", "--set", "webhook.allowedRegistries={r.example.com}"}, "webhook.auth.secretName is required"},
		{"webhook without allowlist", []string{"--set", "webhook.enabled=true", "--set", "webhook.auth.secretName=s"}, "webhook.allowedRegistries must name at least one registry"},
		{"keda without monitoring endpoint", []string{"--set", "autoscaling.keda.enabled=true"}, "natsMonitoringEndpoint is required"},
		{"keda min above max", []string{"--set", "autoscaling.keda.enabled=true", "--set", "autoscaling.keda.natsMonitoringEndpoint=nats:8222", "--set", "autoscaling.keda.minReplicas=5", "--set", "autoscaling.keda.maxReplicas=2"}, "minReplicas must not exceed maxReplicas"},
		{"bad nats url", []string{"--set", "nats.url=http://nats:4222"}, "/nats/url"},
		{"bad cluster domain", []string{"--set", "nats.clusterDomain=Cluster_Local"}, "/nats/clusterDomain"},
		{"hostProcess without build constraint", []string{"--set", "worker.hostProcess.enabled=true", "--set", "worker.windowsBuilds=null"}, "needs worker.windowsBuilds"},
		{"hostProcess on Windows Server 2019", []string{"--set", "worker.hostProcess.enabled=true", "--set", "worker.windowsBuilds={10.0.17763,10.0.20348}"}, "worker.windowsBuilds 10.0.17763: HostProcess workers need the bind filter"},
		{"nats subchart keys in this chart", []string{"--set", "nats.enabled=true"}, "additional properties 'enabled' not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(t, helm, tc.args...)
			if err == nil {
				t.Fatalf("helm template %q succeeded, want an error mentioning %q", tc.args, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error does not mention %q:\n%v", tc.wantErr, err)
			}
		})
	}
}

// TestStackChart keeps the umbrella chart (cimconv + official NATS chart)
// consistent with this one; it cannot be rendered here (the NATS chart is
// downloaded by `helm dependency build`).
func TestStackChart(t *testing.T) {
	type dep struct {
		Name       string `json:"name"`
		Version    string `json:"version"`
		Repository string `json:"repository"`
		Condition  string `json:"condition,omitempty"`
	}
	type chart struct {
		APIVersion   string `json:"apiVersion"`
		Name         string `json:"name"`
		Description  string `json:"description"`
		Type         string `json:"type"`
		Version      string `json:"version"`
		AppVersion   string `json:"appVersion"`
		Dependencies []dep  `json:"dependencies"`
	}
	read := func(path string, into any) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, into); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	var self, stack chart
	read("Chart.yaml", &self)
	read("../cimconv-stack/Chart.yaml", &stack)
	if len(self.Dependencies) != 0 {
		t.Errorf("charts/cimconv declares dependencies %v: helm template/install would then require them vendored", self.Dependencies)
	}
	deps := map[string]dep{}
	for _, d := range stack.Dependencies {
		deps[d.Name] = d
	}
	if d := deps["cimconv"]; d.Version != self.Version || d.Repository != "file://../cimconv" {
		t.Errorf("cimconv-stack depends on cimconv %q from %q, want %q from file://../cimconv", d.Version, d.Repository, self.Version)
	}
	if d := deps["nats"]; d.Condition != "nats.enabled" || !strings.HasPrefix(d.Repository, "https://nats-io.github.io/") {
		t.Errorf("cimconv-stack nats dependency %+v: want condition nats.enabled from the official repository", d)
	}
	if stack.AppVersion != self.AppVersion {
		t.Errorf("appVersion: stack %q, chart %q", stack.AppVersion, self.AppVersion)
	}
	var sv map[string]any
	read("../cimconv-stack/values.yaml", &sv)
	stackValues := values(sv)
	if !stackValues.boolean("nats.enabled") || !stackValues.boolean("nats.config.jetstream.enabled") {
		t.Error("cimconv-stack must enable NATS with JetStream by default")
	}
	if stackValues.str("cimconv.nats.url") != "" || stackValues.str("cimconv.nats.service") != "{{.Release.Name}}-nats" {
		t.Errorf("cimconv-stack cimconv.nats url %q, service %q: want no URL and the bundled NATS service {{.Release.Name}}-nats",
			stackValues.str("cimconv.nats.url"), stackValues.str("cimconv.nats.service"))
	}
}

// TestStackChartRendersCimconv renders the umbrella chart with its cimconv
// subchart (copied in, as `helm dependency build` would) and the NATS
// dependency left out (it cannot be downloaded here): the umbrella's values for
// cimconv must pass the subchart's schema and point it at the bundled NATS.
func TestStackChartRendersCimconv(t *testing.T) {
	helm := helmBinary(t)
	dir := t.TempDir()
	stack := filepath.Join(dir, "cimconv-stack")
	if err := os.CopyFS(stack, os.DirFS("../cimconv-stack")); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(stack, "charts", "cimconv")
	if err := os.CopyFS(sub, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	// Drop the nats dependency (not vendored) from the copy's Chart.yaml.
	chartPath := filepath.Join(stack, "Chart.yaml")
	b, err := os.ReadFile(chartPath)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := yaml.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	var deps []any
	for _, d := range meta["dependencies"].([]any) {
		if d.(map[string]any)["name"] != "nats" {
			deps = append(deps, d)
		}
	}
	meta["dependencies"] = deps
	if b, err = yaml.Marshal(meta); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chartPath, b, 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := helmTemplateChart(t, helm, stack,
		"--set", "cimconv.autoscaling.keda.enabled=true",
		"--set", "cimconv.registryCredentials.secretName=regcred")
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	wantURL := "nats://" + releaseName + "-nats:4222"
	var found bool
	for _, cm := range r.configMaps {
		if cfgText, ok := cm.Data["config.yaml"]; ok {
			found = true
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(cfgText), &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg["nats-url"] != wantURL {
				t.Errorf("stack: nats-url = %v, want %s", cfg["nats-url"], wantURL)
			}
		}
	}
	if !found {
		t.Fatal("stack: no cimconv config rendered")
	}
	if len(r.scaledObjects) != 1 {
		t.Fatalf("stack: %d ScaledObjects, want 1", len(r.scaledObjects))
	}
	for _, so := range r.scaledObjects {
		if got, want := so.Spec.Triggers[0].Metadata["natsServerMonitoringEndpoint"], releaseName+"-nats:8222"; got != want {
			t.Errorf("stack: monitoring endpoint %q, want %q", got, want)
		}
	}
}

// ignoredKeys are serve config keys the chart leaves at their defaults on
// purpose, with the reason.
var ignoredKeys = map[string]string{
	"dev":                      "development mode: loopback registry and embedded NATS",
	"dev-registry":             "the --dev loopback registry's address (development only)",
	"embedded-nats-port":       "the chart always points at a NATS cluster",
	"webhook-insecure-no-auth": "loopback development only",
	"allow-local-registries":   "development only: workers in a cluster must not reach loopback or link-local registries (list them in worker.allowedRegistries)",
	"cache-dir":                "default data-dir/chains is on the data volume",
	"work-dir":                 "default data-dir/work is on the data volume",
}

// chartSetKeys renders every case and returns the serve config keys the chart
// sets itself: flags, CIMCONV_<KEY> variables and config.yaml keys that do not
// come from values config:.
func chartSetKeys(t *testing.T) map[string]bool {
	t.Helper()
	helm := helmBinary(t)
	byEnv := map[string]string{}
	for _, k := range serveConfigKeys {
		byEnv[service.EnvName(k)] = k
	}
	set := map[string]bool{}
	for _, tc := range renderCases {
		var args []string
		for _, f := range tc.files {
			args = append(args, "-f", f)
		}
		out, err := helmTemplate(t, helm, args...)
		if err != nil {
			t.Fatal(err)
		}
		r, err := decodeAll(out)
		if err != nil {
			t.Fatal(err)
		}
		user := loadValues(t, tc.files...).get("config").(map[string]any)
		for _, d := range r.deployments {
			for _, c := range d.Spec.Template.Spec.Containers {
				for _, a := range c.Args {
					if k, _, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
						set[k] = true
					}
				}
				for _, e := range c.Env {
					if k, ok := byEnv[e.Name]; ok {
						set[k] = true
					}
				}
			}
		}
		for _, cm := range r.configMaps {
			if text, ok := cm.Data["config.yaml"]; ok {
				var cfg map[string]any
				if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
					t.Fatal(err)
				}
				for k := range cfg {
					if _, fromUser := user[k]; !fromUser {
						set[k] = true
					}
				}
			}
		}
	}
	delete(set, service.ConfigFlag)
	return set
}

// TestServeConfigKeysCovered keeps the chart in step with `converter serve`:
// every config key is set by the chart, allowed under values `config:`, or
// deliberately left out; a new key fails here until the chart decides.
func TestServeConfigKeysCovered(t *testing.T) {
	b, err := os.ReadFile("values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Config struct {
				AdditionalProperties *bool          `json:"additionalProperties"`
				Properties           map[string]any `json:"properties"`
			} `json:"config"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	cfg := schema.Properties.Config
	if cfg.AdditionalProperties == nil || *cfg.AdditionalProperties {
		t.Error("values.schema.json: config must set additionalProperties false (the converter refuses unknown keys)")
	}
	set := chartSetKeys(t)
	for key := range cfg.Properties {
		if !slices.Contains(serveConfigKeys, key) {
			t.Errorf("values.schema.json allows config.%s, which converter serve does not know", key)
		}
		if set[key] {
			t.Errorf("values.schema.json allows config.%s, which the chart sets itself", key)
		}
	}
	for key := range set {
		if !slices.Contains(serveConfigKeys, key) {
			t.Errorf("the chart sets %q, which is not a converter serve config key", key)
		}
	}
	for key, why := range ignoredKeys {
		if !slices.Contains(serveConfigKeys, key) {
			t.Errorf("ignoredKeys names %q, which converter serve no longer has", key)
		}
		if set[key] {
			t.Errorf("the chart sets %q, listed as ignored (%s)", key, why)
		}
	}
	for _, key := range serveConfigKeys {
		_, allowed := cfg.Properties[key]
		_, ignored := ignoredKeys[key]
		if !allowed && !set[key] && !ignored {
			t.Errorf("converter serve key %q is neither set by the chart, allowed under values config:, nor ignored: decide in charts/cimconv", key)
		}
	}
}

// checkPrometheusRule: with prometheusRule.enabled, one PrometheusRule holds
// exactly the groups of alerts/cimconv.rules.yaml (what promtool checks and
// prometheus_test.go evaluates), with the configured labels.
func checkPrometheusRule(t *testing.T, r *rendered, v values) {
	if !v.boolean("prometheusRule.enabled") {
		if len(r.prometheusRules) != 0 {
			t.Error("PrometheusRule rendered while prometheusRule.enabled is false")
		}
		return
	}
	if len(r.prometheusRules) != 1 {
		t.Fatalf("got %d PrometheusRules, want 1", len(r.prometheusRules))
	}
	want := loadRuleFile(t)
	for _, pr := range r.prometheusRules {
		if !reflect.DeepEqual(pr.Spec, want) {
			t.Errorf("PrometheusRule spec differs from %s:\n got %+v\nwant %+v", rulesFile, pr.Spec, want)
		}
		for k, want := range v.get("prometheusRule.labels").(map[string]any) {
			if pr.Metadata.Labels[k] != want {
				t.Errorf("PrometheusRule label %s = %q, want %v", k, pr.Metadata.Labels[k], want)
			}
		}
	}
}
