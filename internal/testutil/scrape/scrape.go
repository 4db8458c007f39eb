// Package scrape reads a service's GET /metrics in tests, with the
// Prometheus text parser, into samples keyed by metric name and labels.
//
// It imports the Prometheus text parser only; never imported by cmd/.
package scrape

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Samples are the values of one scrape by Key. A histogram gives
// name_count and name_sum samples.
type Samples map[string]float64

// Key is the key of the sample of name with labels given as "name=value"
// pairs, in any order; empty values are left out, as Prometheus treats
// them as absent: Key("x_total", "b=2", "a=1") is `x_total{a=1,b=2}`.
func Key(name string, labels ...string) string {
	var kept []string
	for _, l := range labels {
		if !strings.HasSuffix(l, "=") {
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		return name
	}
	slices.Sort(kept)
	return name + "{" + strings.Join(kept, ",") + "}"
}

// Get fetches url (a /metrics endpoint) and parses it as the Prometheus
// text format, failing the test when it is not.
func Get(t testing.TB, c *http.Client, url string) Samples {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q, not the text format", url, ct)
	}
	return Parse(t, string(body))
}

// Parse parses text in the Prometheus text format.
func Parse(t testing.TB, text string) Samples {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("not the Prometheus text format: %v\n%s", err, text)
	}
	out := Samples{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			switch {
			case m.Counter != nil:
				out[Key(name, labels...)] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[Key(name, labels...)] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[Key(name+"_count", labels...)] = float64(m.Histogram.GetSampleCount())
				out[Key(name+"_sum", labels...)] = m.Histogram.GetSampleSum()
			case m.Untyped != nil:
				out[Key(name, labels...)] = m.Untyped.GetValue()
			}
		}
	}
	return out
}

// Sum adds the samples of name whose labels include every one of labels
// ("name=value" pairs).
func (s Samples) Sum(name string, labels ...string) float64 {
	var sum float64
	for k, v := range s {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		have := strings.Split(strings.TrimSuffix(rest, "}"), ",")
		if !slices.ContainsFunc(labels, func(l string) bool { return !slices.Contains(have, l) }) {
			sum += v
		}
	}
	return sum
}
