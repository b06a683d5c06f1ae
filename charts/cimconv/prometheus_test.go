package chart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"sigs.k8s.io/yaml"

	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/testport"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// rulesFile is the chart's Prometheus rule file (the PrometheusRule's groups).
const rulesFile = "alerts/cimconv.rules.yaml"

func loadRuleFile(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// prometheusTool finds a binary of Debian's prometheus package (.ci/run
// installs it): a skip with instructions where absent, a failure in CI.
func prometheusTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipWithout(t, name, name+" not found on PATH; install Debian's prometheus package (apt-get install -y prometheus; .ci/run does)")
	}
	return p
}

// The shipped rules are valid (promtool check rules) and do what their
// unit tests say (promtool test rules: each alert fires on the series it is
// meant for and stays quiet on a look-alike).
func TestPrometheusRulesPromtool(t *testing.T) {
	promtool := prometheusTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"test", "rules", "testdata/cimconv.rules.test.yaml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every alert the issue asks for is there.
	have := map[string]bool{}
	for _, g := range loadRuleFile(t).Groups {
		for _, r := range g.Rules {
			have[r.Alert] = true
		}
	}
	for _, a := range []string{"CimconvDeadLetters", "CimconvQueueLagGrowing", "CimconvFailureRatioHigh", "CimconvNoWorkerConsuming", "CimconvConversionSlow"} {
		if !have[a] {
			t.Errorf("alert %s missing from %s", a, rulesFile)
		}
	}
}

// startProcess runs a command until the test ends (then interrupts it and
// waits); its output goes to a log file printed if the test fails.
func startProcess(t *testing.T, name string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(name)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("--- %s %s (last lines):\n%s", filepath.Base(name), strings.Join(args, " "), b)
		}
	})
}

// pollUntil retries cond every 250 ms for at most limit.
func pollUntil(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s (last: %s)", limit, what, last)
}

// promQuery is an instant query through Prometheus' HTTP API.
type promQuery struct {
	t    *testing.T
	base string
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (p promQuery) query(expr string) ([]promSample, error) {
	resp, err := http.PostForm(p.base+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("%s", out.Error)
	}
	if out.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", out.Data.ResultType)
	}
	return out.Data.Result, nil
}

func (p promQuery) get(path string, v any) error {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// value is the sum of the samples' values (0 with none).
func value(ss []promSample) float64 {
	var sum float64
	for _, s := range ss {
		if str, ok := s.Value[1].(string); ok {
			f, _ := strconv.ParseFloat(str, 64)
			sum += f
		}
	}
	return sum
}

// Debian's Prometheus scrapes the real service (`converter serve --dev`:
// embedded NATS, loopback registry, real portable conversions) while
// conversions, a cached layer, a permanent failure, a retried failure that
// is dead-lettered, and a webhook event happen, plus a webhook-only process
// whose queue has work and no worker (another namespace). Then every
// dashboard panel's PromQL, the dashboard's variable, every recording rule
// and every alert expression is evaluated through the HTTP API; each must
// return series (the p95 alert, whose 30-minute threshold no test reaches,
// is checked through its recorded signal, and by promtool test rules).
// Prometheus loads the rule file itself: every rule must evaluate without
// error and the driven alerts must be pending or firing. Finally promtool
// check metrics finds nothing to fix in the service's exposition.
func TestPrometheusScrapesLiveService(t *testing.T) {
	prom := prometheusTool(t, "prometheus")
	promtool := prometheusTool(t, "promtool")
	converter := converterBinary(t)
	dir := t.TempDir()

	// The service under test, namespace "cimconv".
	devHTTP := fmt.Sprintf("127.0.0.1:%d", testport.Port(t))
	devNATS := testport.Port(t)
	devReg := fmt.Sprintf("127.0.0.1:%d", testport.Port(t))
	startProcess(t, converter, "--log-format=json", "serve", "--dev", "--listen", devHTTP,
		"--embedded-nats-port", strconv.Itoa(devNATS), "--dev-registry", devReg,
		"--data-dir", filepath.Join(dir, "dev"), "--max-deliver", "2", "--retry-backoff", "100ms")
	// A webhook-only process with its own queue and no worker, namespace "stalled".
	stalledHTTP := fmt.Sprintf("127.0.0.1:%d", testport.Port(t))
	stalledNATS := testport.Port(t)
	startProcess(t, converter, "--log-format=json", "serve", "--role=webhook", "--listen", stalledHTTP,
		"--embedded-nats-port", strconv.Itoa(stalledNATS), "--data-dir", filepath.Join(dir, "stalled"),
		"--webhook-insecure-no-auth", "--webhook-allowed-registries", "registry.example.com")

	// Prometheus: 1 s scrapes and rule evaluations, the chart's rule file.
	promAddr := fmt.Sprintf("127.0.0.1:%d", testport.Port(t))
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: cimconv
    static_configs:
      - targets: [%q]
        labels: {namespace: cimconv, pod: cimconv-dev}
      - targets: [%q]
        labels: {namespace: stalled, pod: cimconv-webhook}
`, rules, devHTTP, stalledHTTP)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, prom, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	p := promQuery{t: t, base: "http://" + promAddr}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pollUntil(t, 2*time.Minute, "the dev registry's sample image", func() (bool, string) {
		resp, err := http.Get("http://" + devReg + "/v2/sample/windows/manifests/ltsc2022")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	pollUntil(t, time.Minute, "both targets up in Prometheus", func() (bool, string) {
		up, err := p.query(`up{job="cimconv"} == 1`)
		return err == nil && len(up) == 2, fmt.Sprintf("%v %v", up, err)
	})

	// Work nobody consumes, in the stalled namespace.
	stalled := openQueue(ctx, t, stalledNATS)
	for i := range 3 {
		if _, err := stalled.Submit(ctx, queue.Request{Image: fmt.Sprintf("registry.example.com/team/app:%d", i), Requester: "test"}); err != nil {
			t.Fatal(err)
		}
	}

	// Conversions in the service's namespace.
	q := openQueue(ctx, t, devNATS)
	sample := devReg + "/sample/windows:ltsc2022"
	other := devReg + "/sample/other:1" // shares the sample's base layer: a cache hit
	registrytest.PushImage(t, other, [][]byte{fixture.Chain(3)[0].Bytes(fixture.Gzip), fixture.AppLayer(7).Bytes(fixture.Gzip)},
		v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"})
	for _, c := range []struct {
		image, wantReason string
	}{
		{sample, ""},
		{other, ""},
		{devReg + "/sample/windows:missing", "permanent"}, // dead-lettered at once
		{"127.0.0.1:1/nothing/here:1", "max_deliver"},     // retried, then dead-lettered
	} {
		res, _, err := q.SubmitAndWait(ctx, queue.Request{Image: c.image, Requester: "test"})
		if err != nil {
			t.Fatalf("%s: %v", c.image, err)
		}
		if res.Reason != c.wantReason && !(c.wantReason == "" && res.Error == "") {
			t.Fatalf("%s: result %+v, want reason %q", c.image, res, c.wantReason)
		}
	}
	resp, err := http.Post("http://"+devHTTP+"/webhooks/distribution", "application/json", strings.NewReader("not json") /* counted as invalid */)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// Prometheus has seen all of it, and the stalled queue's lag (the gauge
	// is refreshed every 10 s) went up.
	pollUntil(t, 2*time.Minute, "the scenario in Prometheus", func() (bool, string) {
		failed, err1 := p.query(`cimconv_conversions_total{namespace="cimconv",result="failed"}`)
		ok, err2 := p.query(`cimconv_conversions_total{namespace="cimconv",result="succeeded"}`)
		lag, err3 := p.query(`cimconv_queue_pending{namespace="stalled"}`)
		ev, err4 := p.query(`cimconv_events_total{namespace="cimconv"}`)
		state := fmt.Sprintf("failed %v, succeeded %v, stalled lag %v, events %v (%v %v %v %v)", value(failed), value(ok), value(lag), value(ev), err1, err2, err3, err4)
		return value(failed) >= 2 && value(ok) >= 2 && value(lag) >= 3 && value(ev) >= 1, state
	})
	// Rate windows need two samples after the last change.
	time.Sleep(3 * time.Second)

	t.Run("dashboard", func(t *testing.T) {
		for _, pq := range dashboardQueries(t) {
			expr := strings.NewReplacer(`$namespace`, "cimconv", `$__rate_interval`, "1m").Replace(pq.expr)
			ss, err := p.query(expr)
			switch {
			case err != nil:
				t.Errorf("panel %q: %s: %v", pq.title, expr, err)
			case len(ss) == 0:
				t.Errorf("panel %q: %s returned no series", pq.title, expr)
			}
		}
		// The $namespace variable: label_values(cimconv_inflight, namespace).
		var lv struct {
			Data []string `json:"data"`
		}
		if err := p.get("/api/v1/label/namespace/values?match[]=cimconv_inflight", &lv); err != nil || !strings.Contains(strings.Join(lv.Data, ","), "cimconv") {
			t.Errorf("namespace variable values %v, %v", lv.Data, err)
		}
	})

	rf := loadRuleFile(t)
	// Alerts the scenario drives, by namespace; the p95 alert is checked by
	// its recorded signal (a conversion here takes seconds, not 30 minutes).
	driven := map[string]string{
		"CimconvDeadLetters":       "cimconv",
		"CimconvFailureRatioHigh":  "cimconv",
		"CimconvQueueLagGrowing":   "stalled",
		"CimconvNoWorkerConsuming": "stalled",
	}
	t.Run("rules", func(t *testing.T) {
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				name := r.Record + r.Alert
				ss, err := p.query(r.Expr)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				if r.Alert == "" || driven[r.Alert] != "" {
					if len(ss) == 0 {
						t.Errorf("%s returned no series:\n%s", name, r.Expr)
					}
				}
				if ns := driven[r.Alert]; ns != "" {
					found := false
					for _, s := range ss {
						found = found || s.Metric["namespace"] == ns
						// The lag gauge is refreshed every 10 s, so the busy
						// namespace may briefly show lag too (the alert's
						// `for: 15m` is what keeps that quiet in real life).
						if s.Metric["namespace"] != ns && r.Alert != "CimconvQueueLagGrowing" {
							t.Errorf("%s fired for namespace %q, want only %q", name, s.Metric["namespace"], ns)
						}
					}
					if !found {
						t.Errorf("%s: no series for namespace %q: %v", name, ns, ss)
					}
				}
				if r.Alert == "CimconvConversionSlow" {
					if len(ss) != 0 {
						t.Errorf("%s fired for conversions of seconds: %v", name, ss)
					}
					sig, err := p.query(`namespace:cimconv_conversion_duration_seconds:p95_30m{namespace="cimconv"}`)
					if err != nil || len(sig) == 0 {
						t.Errorf("%s: its signal returned no series (%v)", name, err)
					}
				}
			}
		}
	})

	t.Run("rule evaluation in Prometheus", func(t *testing.T) {
		// Give the `for` clauses' pending state a few evaluations.
		pollUntil(t, time.Minute, "the driven alerts pending or firing", func() (bool, string) {
			ss, err := p.query(`ALERTS`)
			if err != nil {
				return false, err.Error()
			}
			seen := map[string]bool{}
			for _, s := range ss {
				seen[s.Metric["alertname"]+"/"+s.Metric["namespace"]] = true
			}
			for a, ns := range driven {
				if !seen[a+"/"+ns] {
					return false, fmt.Sprintf("%s/%s not in ALERTS %v", a, ns, seen)
				}
			}
			return true, ""
		})
		var rules struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name      string `json:"name"`
						Health    string `json:"health"`
						LastError string `json:"lastError"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := p.get("/api/v1/rules", &rules); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, g := range rules.Data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					t.Errorf("rule %s: health %q: %s", r.Name, r.Health, r.LastError)
				}
			}
		}
		want := 0
		for _, g := range rf.Groups {
			want += len(g.Rules)
		}
		if n != want {
			t.Errorf("Prometheus loaded %d rules, %s has %d", n, rulesFile, want)
		}
	})

	t.Run("promtool check metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + devHTTP + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		exposition, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"cimconv_stage_duration_seconds_bucket", "cimconv_layers_total", "cimconv_conversions_total"} {
			if !bytes.Contains(exposition, []byte(name)) {
				t.Fatalf("exposition lacks %s", name)
			}
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(exposition)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})
}

func openQueue(ctx context.Context, t *testing.T, port int) *queue.Queue {
	t.Helper()
	nc, err := queue.Connect(ctx, fmt.Sprintf("nats://127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := queue.Open(ctx, nc, queue.WithProvision(false))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

type panelQuery struct{ title, expr string }

// dashboardQueries lists every panel target's PromQL of the dashboard.
func dashboardQueries(t *testing.T) []panelQuery {
	t.Helper()
	b, err := os.ReadFile("dashboards/cimconv.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var out []panelQuery
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr != "" {
				out = append(out, panelQuery{p.Title, tg.Expr})
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no panel queries in the dashboard")
	}
	return out
}
