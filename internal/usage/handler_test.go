package usage_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// serve runs one GET /v1/usage?query as c against a Writer holding the
// fixture (still queued: the handler must write it first).
func serve(t *testing.T, c usage.Caller, query string) (int, usage.Document, llmapi.ErrorObject) {
	t.Helper()
	m := usage.NewMemory(usage.MemoryOptions{})
	w := usage.NewWriter(m, usage.WriterOptions{FlushInterval: time.Hour, Logger: quiet()})
	t.Cleanup(func() { _ = w.Close(ctxT(t)) })
	for _, r := range fixture(day0()) {
		w.Add(r)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(ctxT(t), http.MethodGet, "/v1/usage?"+query, nil)
	usage.NewHandler(w).Serve(rec, req, c)
	var doc usage.Document
	var eb llmapi.ErrorBody
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatalf("%s: %v", rec.Body, err)
		}
	} else if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
		t.Fatalf("%s: %v", rec.Body, err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return rec.Code, doc, eb.Error
}

func identities(doc usage.Document) []string {
	var out []string
	for _, r := range doc.Data {
		out = append(out, r.Identity)
	}
	return out
}

func TestHandlerCallerSeesOnlyTheirOwnUsage(t *testing.T) {
	start := day0().Format(time.RFC3339)
	alice := usage.Caller{Identity: "alice"}
	for _, q := range []string{
		"start=" + start + "&group_by=identity",
		"start=" + start + "&group_by=identity&identity=alice",
		"start=" + start + "&group_by=request",
	} {
		code, doc, e := serve(t, alice, q)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %+v", q, code, e)
		}
		if doc.Identity != "alice" || len(doc.Data) == 0 {
			t.Fatalf("%s: %+v", q, doc)
		}
		for _, r := range doc.Data {
			if r.Identity != "alice" {
				t.Fatalf("%s: alice sees %s's usage", q, r.Identity)
			}
		}
	}
	code, doc, _ := serve(t, alice, "start="+start)
	if code != http.StatusOK || len(doc.Data) != 1 || doc.Data[0].Requests != 3 || doc.Data[0].Total != 49 {
		t.Fatalf("alice's total: %d %+v", code, doc)
	}
	code, _, e := serve(t, alice, "start="+start+"&identity=bob")
	if code != http.StatusForbidden || e.Type != llmapi.TypePermission || *e.Param != "identity" {
		t.Fatalf("alice asking for bob: %d %+v", code, e)
	}
}

func TestHandlerAdminSeesEveryone(t *testing.T) {
	admin := usage.Caller{Identity: "ops", Admin: true}
	start := usage.Day(day0())
	code, doc, e := serve(t, admin, "start="+start+"&group_by=identity")
	if code != http.StatusOK {
		t.Fatalf("%d %+v", code, e)
	}
	if got := identities(doc); !reflect.DeepEqual(got, []string{"alice", "bob", "carol"}) {
		t.Fatalf("identities %v", got)
	}
	code, doc, _ = serve(t, admin, "start="+start+"&group_by=identity&identity=bob")
	if code != http.StatusOK || !reflect.DeepEqual(identities(doc), []string{"bob"}) || doc.Identity != "bob" {
		t.Fatalf("%d %+v", code, doc)
	}
	// Repeated and comma-separated group_by, in any order.
	code, doc, _ = serve(t, admin, "start="+start+"&group_by=model&group_by=identity,day")
	if code != http.StatusOK || !reflect.DeepEqual(doc.GroupBy, []usage.Dimension{usage.DimDay, usage.DimIdentity, usage.DimModel}) || len(doc.Data) != 5 {
		t.Fatalf("%d %+v", code, doc)
	}
}

func TestHandlerRangeAndDefaults(t *testing.T) {
	admin := usage.Caller{Identity: "ops", Admin: true}
	d0 := day0()
	// Unix seconds and a date; day 1 only.
	code, doc, _ := serve(t, admin, "start="+usage.Day(d0.AddDate(0, 0, 1))+"&end="+itoa(d0.AddDate(0, 0, 2).Unix())+"&group_by=request")
	if code != http.StatusOK || len(doc.Data) != 2 || doc.Data[0].RequestID != "req_3" || doc.Data[1].RequestID != "req_4" {
		t.Fatalf("%d %+v", code, doc)
	}
	// Without a range: from the start of this UTC month until now.
	code, doc, _ = serve(t, admin, "")
	now := time.Now().UTC()
	if code != http.StatusOK || !doc.Start.Equal(time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)) || doc.End.After(now) || now.Sub(doc.End) > waitLimit {
		t.Fatalf("default range %s .. %s", doc.Start, doc.End)
	}
	if len(doc.GroupBy) != 0 || len(doc.Data) != 1 || doc.Object != "usage.report" {
		t.Fatalf("%+v", doc)
	}
	code, doc, _ = serve(t, admin, "start="+usage.Day(d0)+"&group_by=request&limit=4")
	if code != http.StatusOK || len(doc.Data) != 4 || !doc.HasMore {
		t.Fatalf("%d %+v", code, doc)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestHandlerBadParameters(t *testing.T) {
	c := usage.Caller{Identity: "alice"}
	for _, tc := range []struct{ query, param string }{
		{"start=yesterday", "start"},
		{"end=2020-13-01", "end"},
		{"start=2024-02-01&end=2024-01-01", "end"},
		{"start=2024-02-01&end=2024-02-01", "end"},
		{"group_by=week", "group_by"},
		{"group_by=identity,identity", "group_by"},
		{"group_by=request,model", "group_by"},
		{"limit=0", "limit"},
		{"limit=ten", "limit"},
		{"limit=10001", "limit"},
	} {
		code, _, e := serve(t, c, tc.query)
		if code != http.StatusBadRequest || e.Type != llmapi.TypeInvalidRequest || e.Param == nil || *e.Param != tc.param || e.Message == "" {
			t.Errorf("%s: %d %+v", tc.query, code, e)
		}
	}
}

func TestParseGroupBy(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []usage.Dimension
		ok   bool
	}{
		{nil, nil, true},
		{[]string{""}, nil, true},
		{[]string{"identity"}, []usage.Dimension{usage.DimIdentity}, true},
		{[]string{"model, day"}, []usage.Dimension{usage.DimDay, usage.DimModel}, true},
		{[]string{"model", "identity", "day"}, []usage.Dimension{usage.DimDay, usage.DimIdentity, usage.DimModel}, true},
		{[]string{"request"}, []usage.Dimension{usage.DimRequest}, true},
		{[]string{"request", "day"}, nil, false},
		{[]string{"Identity"}, nil, false},
		{[]string{"day,day"}, nil, false},
	} {
		got, err := usage.ParseGroupBy(tc.in...)
		if (err == nil) != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseGroupBy(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"2024-03-05", time.Date(2024, 3, 5, 0, 0, 0, 0, time.UTC)},
		{"2024-03-05T10:00:00+02:00", time.Date(2024, 3, 5, 8, 0, 0, 0, time.UTC)},
		{"2024-03-05T10:00:00.5Z", time.Date(2024, 3, 5, 10, 0, 0, 5e8, time.UTC)},
		{"1700000000", time.Unix(1700000000, 0).UTC()},
	} {
		got, err := usage.ParseTime(tc.in)
		if err != nil || !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("ParseTime(%q) = %v, %v", tc.in, got, err)
		}
	}
	for _, bad := range []string{"", "now", "-5", "2024-3-5"} {
		if _, err := usage.ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q) succeeded", bad)
		}
	}
}

func TestTokensOf(t *testing.T) {
	if got := usage.TokensOf(nil); got != (usage.Tokens{}) {
		t.Fatalf("nil usage: %+v", got)
	}
	got := usage.TokensOf(&llmapi.Usage{PromptTokens: 321, CachedTokens: 100, CompletionTokens: 12, ReasoningTokens: 5, TotalTokens: 333})
	if got != (usage.Tokens{Input: 321, Cached: 100, Output: 12, Reasoning: 5, Total: 333}) {
		t.Fatalf("%+v", got)
	}
	// A worker that leaves the total out: input + output.
	if got := usage.TokensOf(&llmapi.Usage{PromptTokens: 3, CompletionTokens: 4}); got.Total != 7 {
		t.Fatalf("%+v", got)
	}
}
