package chart_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8sjson "sigs.k8s.io/json"

	"github.com/cimconv/cimconv/internal/exe"
	"github.com/cimconv/cimconv/internal/service"
	"sigs.k8s.io/yaml"
)

// helmBinary finds helm on PATH or where .ci/extra installs it
// ($(go env GOPATH)/bin). Without helm the chart tests cannot run: that is a
// failure in CI and a skip with instructions elsewhere.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := exe.Path(filepath.Join(dir, "bin"), "helm") // helm.exe on Windows
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
	}
	msg := "helm not found on PATH or in $(go env GOPATH)/bin; install it with .ci/extra " +
		"(go install helm.sh/helm/v3/cmd/helm@v3.22.0)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

const (
	releaseName = "cimconv"
	namespace   = "cimconv-test"
)

// helmTemplate renders the chart in this directory with the given extra
// arguments (-f FILE, --set K=V) and returns stdout, or the error with stderr.
func helmTemplate(t *testing.T, helm string, args ...string) ([]byte, error) {
	t.Helper()
	return helmTemplateChart(t, helm, ".", args...)
}

// helmTemplateChart renders the chart in dir.
func helmTemplateChart(t *testing.T, helm, dir string, args ...string) ([]byte, error) {
	t.Helper()
	cmdArgs := append([]string{"template", releaseName, dir, "--namespace", namespace}, args...)
	cmd := exec.Command(helm, cmdArgs...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Keep helm away from the user's repositories and caches.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w: %s", strings.Join(cmdArgs, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// splitDocuments cuts a multi-document YAML stream at "---" lines and drops
// documents that hold only comments or whitespace.
func splitDocuments(stream []byte) [][]byte {
	var docs [][]byte
	var cur []string
	flush := func() {
		doc := strings.Join(cur, "\n")
		cur = nil
		for _, line := range strings.Split(doc, "\n") {
			l := strings.TrimSpace(line)
			if l != "" && !strings.HasPrefix(l, "#") {
				docs = append(docs, []byte(doc))
				return
			}
		}
	}
	for _, line := range strings.Split(string(stream), "\n") {
		if strings.TrimRight(line, " ") == "---" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

// The two CRDs the chart renders, decoded strictly into the fields the chart
// may use: a typo in the template is an unknown field here.
type scaledObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// rendered holds every object of one `helm template` run, by kind and name.
type rendered struct {
	deployments     map[string]*appsv1.Deployment
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	serviceAccounts map[string]*corev1.ServiceAccount
	pdbs            map[string]*policyv1.PodDisruptionBudget
	ingresses       map[string]*networkingv1.Ingress
	scaledObjects   map[string]*scaledObject
	serviceMonitors map[string]*serviceMonitor
}

// decodeObject strictly decodes one document into the type its apiVersion and
// kind name. Unknown kinds and unknown fields are errors.
func (r *rendered) decodeObject(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("reading apiVersion/kind: %w", err)
	}
	var (
		obj  any
		name *string
	)
	gvk := tm.APIVersion + "/" + tm.Kind
	switch gvk {
	case "apps/v1/Deployment":
		o := &appsv1.Deployment{}
		obj, name = o, &o.Name
		defer func() { r.deployments[o.Name] = o }()
	case "v1/Service":
		o := &corev1.Service{}
		obj, name = o, &o.Name
		defer func() { r.services[o.Name] = o }()
	case "v1/ConfigMap":
		o := &corev1.ConfigMap{}
		obj, name = o, &o.Name
		defer func() { r.configMaps[o.Name] = o }()
	case "v1/ServiceAccount":
		o := &corev1.ServiceAccount{}
		obj, name = o, &o.Name
		defer func() { r.serviceAccounts[o.Name] = o }()
	case "policy/v1/PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		obj, name = o, &o.Name
		defer func() { r.pdbs[o.Name] = o }()
	case "networking.k8s.io/v1/Ingress":
		o := &networkingv1.Ingress{}
		obj, name = o, &o.Name
		defer func() { r.ingresses[o.Name] = o }()
	case "keda.sh/v1alpha1/ScaledObject":
		o := &scaledObject{}
		obj, name = o, &o.Metadata.Name
		defer func() { r.scaledObjects[o.Metadata.Name] = o }()
	case "monitoring.coreos.com/v1/ServiceMonitor":
		o := &serviceMonitor{}
		obj, name = o, &o.Metadata.Name
		defer func() { r.serviceMonitors[o.Metadata.Name] = o }()
	default:
		return fmt.Errorf("unexpected object %s", gvk)
	}
	if err := decodeStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	if *name == "" {
		return fmt.Errorf("%s without metadata.name", gvk)
	}
	return nil
}

// decodeStrict decodes YAML the way the API server reads JSON: field names are
// case-sensitive, and unknown or duplicate fields are errors (encoding/json
// would accept "readonly" for "readOnly").
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("YAML: %w", err)
	}
	strictErrs, err := k8sjson.UnmarshalStrict(j, obj, k8sjson.DisallowDuplicateFields, k8sjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if len(strictErrs) > 0 {
		return fmt.Errorf("strict decode: %w", errors.Join(strictErrs...))
	}
	return nil
}

func decodeAll(stream []byte) (*rendered, error) {
	r := &rendered{
		deployments:     map[string]*appsv1.Deployment{},
		services:        map[string]*corev1.Service{},
		configMaps:      map[string]*corev1.ConfigMap{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		pdbs:            map[string]*policyv1.PodDisruptionBudget{},
		ingresses:       map[string]*networkingv1.Ingress{},
		scaledObjects:   map[string]*scaledObject{},
		serviceMonitors: map[string]*serviceMonitor{},
	}
	docs := splitDocuments(stream)
	if len(docs) == 0 {
		return nil, errors.New("helm rendered no objects")
	}
	var errs []error
	for i, doc := range docs {
		if err := r.decodeObject(doc); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i, err))
		}
	}
	return r, errors.Join(errs...)
}

// deploymentByComponent returns the Deployment whose pods carry
// app.kubernetes.io/component=component.
func (r *rendered) deploymentByComponent(component string) *appsv1.Deployment {
	for _, d := range r.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			return d
		}
	}
	return nil
}

// values is the chart's values.yaml merged with override files, the way helm
// coalesces them (maps merge, everything else is replaced).
type values map[string]any

func loadValues(t *testing.T, files ...string) values {
	t.Helper()
	merged := map[string]any{}
	for _, f := range append([]string{"values.yaml"}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		mergeInto(merged, m)
	}
	return merged
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeInto(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// get walks a dotted path ("worker.hostProcess.enabled").
func (v values) get(path string) any {
	var cur any = map[string]any(v)
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func (v values) str(path string) string {
	s, _ := v.get(path).(string)
	return s
}

func (v values) boolean(path string) bool {
	b, _ := v.get(path).(bool)
	return b
}

func (v values) integer(path string) int {
	switch n := v.get(path).(type) {
	case float64:
		return int(n)
	case int64:
		return int(n)
	case int:
		return n
	}
	return -1
}

func (v values) strings(path string) []string {
	var out []string
	l, _ := v.get(path).([]any)
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func volumeForSecret(t *testing.T, spec *corev1.PodSpec, secret string) *corev1.Volume {
	t.Helper()
	for i := range spec.Volumes {
		if s := spec.Volumes[i].Secret; s != nil && s.SecretName == secret {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func mountFor(c *corev1.Container, volume string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// mountedVolume fails unless the pod has volume name mounted at path.
func mountedVolume(t *testing.T, spec *corev1.PodSpec, c *corev1.Container, name, path string) {
	t.Helper()
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == name }) {
		t.Errorf("%s: no volume %q", c.Name, name)
	}
	if m := mountFor(c, name); m == nil || m.MountPath != path {
		t.Errorf("%s: volume %q mount %+v, want at %q", c.Name, name, m, path)
	}
}

func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func envSecretRef(c *corev1.Container, name string) *corev1.SecretKeySelector {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil {
			return e.ValueFrom.SecretKeyRef
		}
	}
	return nil
}

// requireNodeAffinity fails unless every required node selector term has
// key In values (order-insensitive).
func requireNodeAffinity(t *testing.T, spec *corev1.PodSpec, key string, want []string) {
	t.Helper()
	if spec.Affinity == nil || spec.Affinity.NodeAffinity == nil ||
		spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		t.Errorf("no required node affinity (want %s In %v)", key, want)
		return
	}
	terms := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		t.Errorf("required node affinity without terms (want %s In %v)", key, want)
	}
	for i, term := range terms {
		ok := slices.ContainsFunc(term.MatchExpressions, func(e corev1.NodeSelectorRequirement) bool {
			if e.Key != key || e.Operator != corev1.NodeSelectorOpIn {
				return false
			}
			got := slices.Clone(e.Values)
			w := slices.Clone(want)
			slices.Sort(got)
			slices.Sort(w)
			return slices.Equal(got, w)
		})
		if !ok {
			t.Errorf("node selector term %d lacks %s In %v", i, key, want)
		}
	}
}

func labelSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return nil, errors.New("nil label selector")
	}
	return metav1.LabelSelectorAsSelector(s)
}

func metav1LabelSelector(sm *serviceMonitor) (labels.Selector, error) {
	return labelSelector(&sm.Spec.Selector)
}

// serveConfigKeys are the keys of `converter serve`'s config; its loader
// refuses any other key in the file. Each is also read from CIMCONV_<KEY>.
var serveConfigKeys = service.Keys()

// isExtraEnv reports whether name was given by the user in the extraEnv list at path.
func isExtraEnv(v values, path, name string) bool {
	l, _ := v.get(path).([]any)
	for _, e := range l {
		if m, ok := e.(map[string]any); ok && m["name"] == name {
			return true
		}
	}
	return false
}
