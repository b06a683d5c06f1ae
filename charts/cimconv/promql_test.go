package chart_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// promqlKeywords are identifiers PromQL uses as operators or modifiers; they
// never name a metric.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "atan2": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// labelListKeywords are followed by a parenthesised list of label names.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames returns the metric names a PromQL expression (with Grafana
// $variables) reads, in order of first use. It is a small lexer, not a full
// parser: label matchers ({...}), ranges ([...]), strings, numbers, function
// names, keywords and label lists after by/without/on/ignoring are skipped;
// every other identifier is a metric name.
func metricNames(expr string) ([]string, error) {
	var names []string
	s := expr
	i := 0
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(j int) int {
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r') {
			j++
		}
		return j
	}
	// skipString returns the index after the closing quote of the string at j.
	skipString := func(j int) (int, error) {
		q := s[j]
		for k := j + 1; k < len(s); k++ {
			switch {
			case s[k] == '\\' && q != '`':
				k++
			case s[k] == q:
				return k + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at offset %d in %q", j, expr)
	}
	// skipGroup returns the index after the bracket closing the one at j.
	skipGroup := func(j int) (int, error) {
		open := s[j]
		close := map[byte]byte{'{': '}', '[': ']', '(': ')'}[open]
		depth := 0
		for k := j; k < len(s); k++ {
			switch c := s[k]; c {
			case '"', '\'', '`':
				end, err := skipString(k)
				if err != nil {
					return 0, err
				}
				k = end - 1
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return k + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %q at offset %d in %q", open, j, expr)
	}
	depth := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{' || c == '[':
			end, err := skipGroup(i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unexpected %q at offset %d in %q", c, i, expr)
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced ')' at offset %d in %q", i, expr)
			}
			i++
		case c == '$':
			// Grafana variable: $name or ${name}.
			i++
			if i < len(s) && s[i] == '{' {
				end, err := skipGroup(i)
				if err != nil {
					return nil, err
				}
				i = end
				continue
			}
			for i < len(s) && isIdent(s[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			// Number or duration (1h30m, 0.95, 1e-3, 0x1f).
			for i < len(s) && (isIdent(s[i]) || s[i] == '.' ||
				(s[i] == '-' || s[i] == '+') && (s[i-1] == 'e' || s[i-1] == 'E')) {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			word := s[i:j]
			next := skipSpace(j)
			switch {
			case labelListKeywords[word] && next < len(s) && s[next] == '(':
				end, err := skipGroup(next)
				if err != nil {
					return nil, err
				}
				i = end
				continue
			case promqlKeywords[word]:
			case next < len(s) && s[next] == '(':
				// function or aggregation name
			case followedByGrouping(s[next:]):
				// aggregation with its grouping first: sum by (le) (...)
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
			i = j
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced '(' in %q", expr)
	}
	return names, nil
}

// followedByGrouping reports whether rest starts with "by (" or "without (".
func followedByGrouping(rest string) bool {
	for _, kw := range []string{"by", "without"} {
		if after, ok := strings.CutPrefix(rest, kw); ok {
			after = strings.TrimLeft(after, " \t\r\n")
			if strings.HasPrefix(after, "(") {
				return true
			}
		}
	}
	return false
}

func TestMetricNames(t *testing.T) {
	cases := []struct {
		expr    string
		want    []string
		wantErr bool
	}{
		{expr: `up`, want: []string{"up"}},
		{expr: `sum by (result) (rate(cimconv_conversions_total{namespace=~"$namespace"}[$__rate_interval]))`, want: []string{"cimconv_conversions_total"}},
		{expr: `sum(rate(a_total[5m])) by (le) / ignoring(x) group_left(y) b_total offset 1h`, want: []string{"a_total", "b_total"}},
		{expr: `histogram_quantile(0.95, sum by (le, stage) (rate(h_bucket{stage!="by"}[1m])))`, want: []string{"h_bucket"}},
		{expr: `label_replace(m, "dst", "$1", "src", "(.*)") and on(pod) n unless bool o`, want: []string{"m", "n", "o"}},
		{expr: `x{a="}"} * 1e-3 + y @ start()`, want: []string{"x", "y"}},
		{expr: `max(q) > 0x1F or ${var} or vector(1)`, want: []string{"q"}},
		{expr: `sum without(instance) (z) - z`, want: []string{"z"}},
		{expr: `rate(x[5m]`, wantErr: true},
		{expr: `x{a="b"`, wantErr: true},
		{expr: `x{a="b}`, wantErr: true},
		{expr: `x)`, wantErr: true},
	}
	for _, tc := range cases {
		got, err := metricNames(tc.expr)
		if (err != nil) != tc.wantErr {
			t.Errorf("metricNames(%q) error = %v, wantErr %v", tc.expr, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

var identRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// FuzzMetricNames: never panics, and every name returned is an identifier
// that occurs in the input.
func FuzzMetricNames(f *testing.F) {
	for _, p := range loadDashboardExprs(f) {
		f.Add(p)
	}
	for _, s := range []string{``, `(`, `"`, `{`, `$`, `${`, `by(`, `1e+`, "`x", `a{b='c\'d'}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		names, err := metricNames(expr)
		if err != nil {
			return
		}
		for _, n := range names {
			if !identRE.MatchString(n) || !strings.Contains(expr, n) {
				t.Fatalf("metricNames(%q) returned %q", expr, n)
			}
			if promqlKeywords[n] {
				t.Fatalf("metricNames(%q) returned keyword %q", expr, n)
			}
		}
	})
}

func loadDashboardExprs(tb testing.TB) []string {
	tb.Helper()
	var exprs []string
	for _, p := range loadDashboard(tb).Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	return exprs
}
