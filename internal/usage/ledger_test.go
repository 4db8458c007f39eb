package usage_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/busdk/bus-integration-codex/internal/usage"
)

// day0 is the UTC midnight three days ago: every fixture record lies in
// day0, day0+1d or day0+2d (well inside the retention).
func day0() time.Time {
	// Three days back: the fixture's last record (day 2, 05:00) is in the past
	// whatever the time of day.
	return time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3)
}

// fixture returns six records over three days, three identities and two
// models, each with its own exact token counts.
func fixture(d0 time.Time) []usage.Record {
	d := func(days int, offset time.Duration) time.Time { return d0.AddDate(0, 0, days).Add(offset) }
	return []usage.Record{
		{RequestID: "req_1", Time: d(0, time.Hour), Identity: "alice", Model: "m1", Operation: "chat.completions", Status: 200, DurationMS: 12,
			Tokens: usage.Tokens{Input: 10, Cached: 4, Output: 5, Reasoning: 2, Total: 15}},
		{RequestID: "req_2", Time: d(0, 2*time.Hour), Identity: "alice", Model: "m2", Operation: "responses", Status: 200, DurationMS: 30,
			Tokens: usage.Tokens{Input: 20, Output: 7, Total: 27}},
		{RequestID: "req_3", Time: d(1, 3*time.Hour), Identity: "bob", Model: "m1", Operation: "completions", Status: 200, DurationMS: 7,
			Tokens: usage.Tokens{Input: 30, Cached: 10, Output: 9, Reasoning: 3, Total: 39}},
		// The last microsecond of its day.
		{RequestID: "req_4", Time: d(1, 24*time.Hour-time.Microsecond), Identity: "bob", Model: "m1", Operation: "chat.completions", Status: 502, DurationMS: 1,
			Tokens: usage.Tokens{Input: 1, Output: 1, Total: 2}},
		// Exactly midnight.
		{RequestID: "req_5", Time: d(2, 0), Identity: "carol", Model: "m2", Operation: "chat.completions", Status: 200, DurationMS: 900,
			Tokens: usage.Tokens{Input: 100, Cached: 60, Output: 50, Reasoning: 20, Total: 150}},
		{RequestID: "req_6", Time: d(2, 5*time.Hour), Identity: "alice", Model: "m1", Operation: "chat.completions", Status: 499, DurationMS: 3,
			Tokens: usage.Tokens{Input: 3, Output: 4, Total: 7}},
	}
}

func row(day, identity, model string, requests int64, t usage.Tokens) usage.Row {
	return usage.Row{Day: day, Identity: identity, Model: model, Requests: requests, Tokens: t}
}

func listing(recs ...usage.Record) []usage.Row {
	rows := []usage.Row{}
	for _, r := range recs {
		t := r.Normalize().Time
		rows = append(rows, usage.Row{Day: usage.Day(t), Identity: r.Identity, Model: r.Model, RequestID: r.RequestID, Time: &t,
			Operation: r.Operation, Status: r.Status, DurationMS: r.DurationMS, Requests: 1, Tokens: r.Tokens})
	}
	return rows
}

// ledgerSuite is the behaviour every Ledger shares. open returns a ledger
// on one store; when shared, a second open reads what the first wrote
// (another front-door replica).
func ledgerSuite(t *testing.T, shared bool, open func(t *testing.T) usage.Ledger) {
	ctx := context.Background()
	d0 := day0()
	recs := fixture(d0)
	w := open(t)
	if err := w.Append(ctx, recs[:4]); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(ctx, recs[2:]); err != nil { // req_3 and req_4 again
		t.Fatal(err)
	}
	if err := w.Append(ctx, nil); err != nil {
		t.Fatal(err)
	}
	r := w
	if shared {
		r = open(t)
	}
	days := []string{usage.Day(d0), usage.Day(d0.AddDate(0, 0, 1)), usage.Day(d0.AddDate(0, 0, 2))}
	all := func(groupBy ...usage.Dimension) usage.Query {
		return usage.Query{Start: d0, End: d0.AddDate(0, 0, 3), GroupBy: groupBy}
	}
	withIdentity := func(q usage.Query, id string) usage.Query { q.Identity = id; return q }
	withLimit := func(q usage.Query, n int) usage.Query { q.Limit = n; return q }
	tests := []struct {
		name string
		q    usage.Query
		want usage.Report
	}{
		{"Total", all(), usage.Report{Rows: []usage.Row{row("", "", "", 6, usage.Tokens{Input: 164, Cached: 74, Output: 76, Reasoning: 25, Total: 240})}}},
		{"ByIdentity", all(usage.DimIdentity), usage.Report{Rows: []usage.Row{
			row("", "alice", "", 3, usage.Tokens{Input: 33, Cached: 4, Output: 16, Reasoning: 2, Total: 49}),
			row("", "bob", "", 2, usage.Tokens{Input: 31, Cached: 10, Output: 10, Reasoning: 3, Total: 41}),
			row("", "carol", "", 1, usage.Tokens{Input: 100, Cached: 60, Output: 50, Reasoning: 20, Total: 150}),
		}}},
		{"ByDay", all(usage.DimDay), usage.Report{Rows: []usage.Row{
			row(days[0], "", "", 2, usage.Tokens{Input: 30, Cached: 4, Output: 12, Reasoning: 2, Total: 42}),
			row(days[1], "", "", 2, usage.Tokens{Input: 31, Cached: 10, Output: 10, Reasoning: 3, Total: 41}),
			row(days[2], "", "", 2, usage.Tokens{Input: 103, Cached: 60, Output: 54, Reasoning: 20, Total: 157}),
		}}},
		{"ByModel", all(usage.DimModel), usage.Report{Rows: []usage.Row{
			row("", "", "m1", 4, usage.Tokens{Input: 44, Cached: 14, Output: 19, Reasoning: 5, Total: 63}),
			row("", "", "m2", 2, usage.Tokens{Input: 120, Cached: 60, Output: 57, Reasoning: 20, Total: 177}),
		}}},
		{"ByDayIdentityModel", all(usage.DimDay, usage.DimIdentity, usage.DimModel), usage.Report{Rows: []usage.Row{
			row(days[0], "alice", "m1", 1, recs[0].Tokens),
			row(days[0], "alice", "m2", 1, recs[1].Tokens),
			row(days[1], "bob", "m1", 2, usage.Tokens{Input: 31, Cached: 10, Output: 10, Reasoning: 3, Total: 41}),
			row(days[2], "alice", "m1", 1, recs[5].Tokens),
			row(days[2], "carol", "m2", 1, recs[4].Tokens),
		}}},
		{"OneIdentityByModel", withIdentity(all(usage.DimModel), "alice"), usage.Report{Rows: []usage.Row{
			row("", "", "m1", 2, usage.Tokens{Input: 13, Cached: 4, Output: 9, Reasoning: 2, Total: 22}),
			row("", "", "m2", 1, recs[1].Tokens),
		}}},
		{"UnknownIdentity", withIdentity(all(usage.DimIdentity), "mallory"), usage.Report{Rows: []usage.Row{}}},
		{"UnknownIdentityTotal", withIdentity(all(), "mallory"), usage.Report{Rows: []usage.Row{row("", "", "", 0, usage.Tokens{})}}},
		{"RequestsExact", all(usage.DimRequest), usage.Report{Rows: listing(recs...)}},
		{"RequestsOfOneIdentity", withIdentity(all(usage.DimRequest), "bob"), usage.Report{Rows: listing(recs[2], recs[3])}},
		// Start is included, End excluded: day 1 holds req_3 and req_4
		// (its last microsecond), not req_5 (the next midnight).
		{"DayBoundaries", usage.Query{Start: d0.AddDate(0, 0, 1), End: d0.AddDate(0, 0, 2), GroupBy: []usage.Dimension{usage.DimRequest}},
			usage.Report{Rows: listing(recs[2], recs[3])}},
		{"ListingLimit", withLimit(all(usage.DimRequest), 2), usage.Report{Rows: listing(recs[0], recs[1]), HasMore: true}},
		{"ListingAtLimit", withLimit(all(usage.DimRequest), 6), usage.Report{Rows: listing(recs...)}},
		{"EmptyRange", usage.Query{Start: d0.AddDate(0, 0, -5), End: d0.AddDate(0, 0, -4), GroupBy: []usage.Dimension{usage.DimDay}}, usage.Report{Rows: []usage.Row{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.q.Validate(); err != nil {
				t.Fatal(err)
			}
			got, err := r.Query(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %s\nwant %s", show(got), show(tc.want))
			}
		})
	}
}

func show(r usage.Report) string {
	s := fmt.Sprintf("has_more=%v", r.HasMore)
	for _, row := range r.Rows {
		tm := ""
		if row.Time != nil {
			tm = row.Time.Format(time.RFC3339Nano)
		}
		s += fmt.Sprintf("\n  %s|%s|%s|%s|%s|%s|%d|%d ms|n=%d %+v", row.Day, row.Identity, row.Model, row.RequestID, tm, row.Operation, row.Status, row.DurationMS, row.Requests, row.Tokens)
	}
	return s
}

func TestMemoryLedger(t *testing.T) {
	ledgerSuite(t, false, func(*testing.T) usage.Ledger { return usage.NewMemory(usage.MemoryOptions{}) })
}

func TestRedisLedger(t *testing.T) {
	addr := redistest.Start(t)
	ledgerSuite(t, true, func(t *testing.T) usage.Ledger {
		l, err := usage.OpenRedis(context.Background(), usage.RedisConfig{Addr: addr, Prefix: "t:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	})
}

func TestPostgresLedger(t *testing.T) {
	dsn := pgtest.Start(t)
	ledgerSuite(t, true, func(t *testing.T) usage.Ledger {
		l, err := usage.OpenPostgres(context.Background(), dsn, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	})
}

func TestMemoryLedgerBounds(t *testing.T) {
	ctx := context.Background()
	m := usage.NewMemory(usage.MemoryOptions{MaxRecords: 3, Retention: 24 * time.Hour})
	now := time.Now().UTC()
	var recs []usage.Record
	for i := range 5 {
		recs = append(recs, usage.Record{RequestID: fmt.Sprint("r", i), Time: now.Add(time.Duration(i-5) * time.Minute), Identity: "a", Tokens: usage.Tokens{Total: 1}})
	}
	old := usage.Record{RequestID: "old", Time: now.Add(-25 * time.Hour), Identity: "a", Tokens: usage.Tokens{Total: 100}}
	if err := m.Append(ctx, append([]usage.Record{old}, recs...)); err != nil {
		t.Fatal(err)
	}
	got, err := m.Query(ctx, usage.Query{Start: now.Add(-48 * time.Hour), End: now.Add(time.Hour), GroupBy: []usage.Dimension{usage.DimRequest}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, usage.Report{Rows: listing(recs[2:]...)}) {
		t.Fatalf("kept %s", show(got))
	}
}

func TestPostgresBadDSNHidesPassword(t *testing.T) {
	_, err := usage.OpenPostgres(context.Background(), "postgres://u:s3cret@[bad", 0)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("got %v", err)
	}
}
