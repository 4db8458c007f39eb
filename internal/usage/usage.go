// Package usage is the usage ledger of the REST front door: one Record per
// answered execution request (who, which model and operation, when, with
// which status, and the exact token counts the worker reported), kept in a
// Ledger and read back as a Report grouped by identity, model and day, or
// as the list of requests.
//
// Three Ledgers behave the same (one test suite runs on all of them):
// Memory (one process), Redis and PostgreSQL (shared by every front-door
// replica that points at them). The front door never writes a Ledger on
// its response path: it hands records to a Writer, which queues them
// (bounded, never blocking; a record that does not fit is dropped and
// counted) and appends them in batches from its own goroutine.
//
// Handler serves GET /v1/usage: an admin reads everyone's usage, any other
// caller only their own.
//
// Days are UTC days; time ranges include Start and exclude End.
//
// It imports pkg/llmapi and the Redis and PostgreSQL drivers.
package usage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Tokens are the exact token counts of one request, or their sums.
type Tokens struct {
	// Input counts input (prompt) tokens, cached ones included.
	Input int64 `json:"input_tokens"`
	// Cached is the part of Input served from the prompt cache.
	Cached int64 `json:"cached_tokens"`
	// Output counts output (completion) tokens, reasoning ones included.
	Output int64 `json:"output_tokens"`
	// Reasoning is the part of Output spent on reasoning.
	Reasoning int64 `json:"reasoning_tokens"`
	// Total is Input + Output as the model reported it.
	Total int64 `json:"total_tokens"`
}

// TokensOf returns the counts of a response event's usage (zero when the
// worker reported none).
func TokensOf(u *llmapi.Usage) Tokens {
	if u == nil {
		return Tokens{}
	}
	t := Tokens{Input: u.PromptTokens, Cached: u.CachedTokens, Output: u.CompletionTokens,
		Reasoning: u.ReasoningTokens, Total: u.TotalTokens}
	if t.Total == 0 {
		t.Total = t.Input + t.Output
	}
	return t
}

func (t *Tokens) add(o Tokens) {
	t.Input += o.Input
	t.Cached += o.Cached
	t.Output += o.Output
	t.Reasoning += o.Reasoning
	t.Total += o.Total
}

// Record is the usage of one answered execution request.
type Record struct {
	// RequestID is the request's id (X-Request-Id); unique.
	RequestID string `json:"request_id"`
	// Time is when the answer was complete.
	Time time.Time `json:"time"`
	// Identity is the caller (the JWT sub).
	Identity string `json:"identity"`
	// Model is the public model id the caller asked for.
	Model string `json:"model"`
	// Operation is the bus operation ("chat.completions", "responses",
	// "completions").
	Operation string `json:"operation"`
	// Status is the HTTP status the caller got (499: the caller went away).
	Status int `json:"status"`
	// DurationMS is how long the request took, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
	Tokens
}

// Normalize returns r with its time in UTC at microsecond precision (what
// every Ledger keeps).
func (r Record) Normalize() Record {
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	return r
}

// Day is the UTC date of t, "2006-01-02".
func Day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Dimension is what a Report groups by.
type Dimension string

// The dimensions. DimRequest lists the requests themselves and cannot be
// combined with the others.
const (
	DimDay      Dimension = "day"
	DimIdentity Dimension = "identity"
	DimModel    Dimension = "model"
	DimRequest  Dimension = "request"
)

// ParseGroupBy reads a group_by value: a comma-separated list of day,
// identity and model (any order, each at most once), or request alone;
// empty means no grouping (one total row). The result is in the canonical
// order day, identity, model.
func ParseGroupBy(values ...string) ([]Dimension, error) {
	seen := map[Dimension]bool{}
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			d := Dimension(f)
			switch d {
			case DimDay, DimIdentity, DimModel, DimRequest:
			default:
				return nil, fmt.Errorf("group_by %q: want identity, model, day (comma-separated) or request", f)
			}
			if seen[d] {
				return nil, fmt.Errorf("group_by names %s twice", d)
			}
			seen[d] = true
		}
	}
	if seen[DimRequest] {
		if len(seen) > 1 {
			return nil, errors.New("group_by request lists single requests and cannot be combined with identity, model or day")
		}
		return []Dimension{DimRequest}, nil
	}
	var out []Dimension
	for _, d := range []Dimension{DimDay, DimIdentity, DimModel} {
		if seen[d] {
			out = append(out, d)
		}
	}
	return out, nil
}

// Limits of a request listing.
const (
	// DefaultLimit is how many requests a listing returns when Query.Limit is 0.
	DefaultLimit = 1000
	// MaxLimit is the largest Query.Limit.
	MaxLimit = 10000
)

// Query selects and groups usage.
type Query struct {
	// Start (included) and End (excluded) bound the records' Time.
	Start, End time.Time
	// Identity, when set, keeps only that identity's records.
	Identity string
	// GroupBy is the grouping (see ParseGroupBy); empty for one total row.
	GroupBy []Dimension
	// Limit bounds a request listing (DefaultLimit when 0, at most
	// MaxLimit); grouped reports are not limited.
	Limit int
}

// Listing reports whether q lists requests.
func (q Query) Listing() bool { return slices.Contains(q.GroupBy, DimRequest) }

func (q Query) has(d Dimension) bool { return slices.Contains(q.GroupBy, d) }

// limit is the effective listing limit.
func (q Query) limit() int {
	switch {
	case q.Limit <= 0:
		return DefaultLimit
	case q.Limit > MaxLimit:
		return MaxLimit
	}
	return q.Limit
}

// Validate checks q.
func (q Query) Validate() error {
	if !q.End.After(q.Start) {
		return errors.New("end must be after start")
	}
	if _, err := ParseGroupBy(dimStrings(q.GroupBy)...); err != nil {
		return err
	}
	return nil
}

func dimStrings(ds []Dimension) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d)
	}
	return out
}

// matches reports whether r is selected by q.
func (q Query) matches(r Record) bool {
	return !r.Time.Before(q.Start) && r.Time.Before(q.End) && (q.Identity == "" || r.Identity == q.Identity)
}

// Row is one line of a Report: a group's sums, or (for a request listing)
// one request.
type Row struct {
	// Day, Identity and Model are the group's key (set when grouped by
	// them, and always for a request).
	Day      string `json:"day,omitempty"`
	Identity string `json:"identity,omitempty"`
	Model    string `json:"model,omitempty"`
	// RequestID, Time, Operation, Status and DurationMS describe one
	// request (listings only).
	RequestID  string     `json:"request_id,omitempty"`
	Time       *time.Time `json:"time,omitempty"`
	Operation  string     `json:"operation,omitempty"`
	Status     int        `json:"status,omitempty"`
	DurationMS int64      `json:"duration_ms,omitempty"`
	// Requests counts the requests of the group (1 for a request).
	Requests int64 `json:"requests"`
	Tokens
}

// Report is the answer to a Query.
type Report struct {
	// Rows are ordered by day, identity and model (a listing: by time and
	// request id). Without grouping there is exactly one row.
	Rows []Row
	// HasMore is true when a listing stopped at its limit.
	HasMore bool
}

// Ledger keeps usage records. Implementations are safe for concurrent use.
type Ledger interface {
	// Append stores records; appending a record again changes nothing.
	Append(ctx context.Context, records []Record) error
	// Query answers q (which the caller has validated).
	Query(ctx context.Context, q Query) (Report, error)
	// Close releases the ledger.
	Close() error
}

// DefaultRetention is how long ledgers keep records (400 days: this and
// the last year's same month).
const DefaultRetention = 400 * 24 * time.Hour

// rowOf is the listing row of r.
func rowOf(r Record) Row {
	t := r.Time
	return Row{Day: Day(t), Identity: r.Identity, Model: r.Model, RequestID: r.RequestID, Time: &t,
		Operation: r.Operation, Status: r.Status, DurationMS: r.DurationMS, Requests: 1, Tokens: r.Tokens}
}

// aggregator builds a Report from records in any order, the way every
// Ledger that cannot group by itself does.
type aggregator struct {
	q      Query
	groups map[Row]*Row // keyed by the row's key fields only
	list   []Row
	total  Row
}

func newAggregator(q Query) *aggregator { return &aggregator{q: q, groups: map[Row]*Row{}} }

// add counts r when q selects it.
func (a *aggregator) add(r Record) {
	if !a.q.matches(r) {
		return
	}
	switch {
	case a.q.Listing():
		a.list = append(a.list, rowOf(r))
	case len(a.q.GroupBy) == 0:
		a.total.Requests++
		a.total.add(r.Tokens)
	default:
		var key Row
		if a.q.has(DimDay) {
			key.Day = Day(r.Time)
		}
		if a.q.has(DimIdentity) {
			key.Identity = r.Identity
		}
		if a.q.has(DimModel) {
			key.Model = r.Model
		}
		g := a.groups[key]
		if g == nil {
			g = &Row{Day: key.Day, Identity: key.Identity, Model: key.Model}
			a.groups[key] = g
		}
		g.Requests++
		g.add(r.Tokens)
	}
}

// report returns the Report of what was added.
func (a *aggregator) report() Report {
	switch {
	case a.q.Listing():
		slices.SortFunc(a.list, func(x, y Row) int {
			return cmp.Or(x.Time.Compare(*y.Time), strings.Compare(x.RequestID, y.RequestID))
		})
		n := a.q.limit()
		if len(a.list) > n {
			return Report{Rows: a.list[:n], HasMore: true}
		}
		return Report{Rows: append([]Row{}, a.list...)}
	case len(a.q.GroupBy) == 0:
		return Report{Rows: []Row{a.total}}
	}
	rows := make([]Row, 0, len(a.groups))
	for _, g := range a.groups {
		rows = append(rows, *g)
	}
	slices.SortFunc(rows, compareRows)
	return Report{Rows: rows}
}

// compareRows orders group rows by day, identity and model (byte order).
func compareRows(x, y Row) int {
	return cmp.Or(strings.Compare(x.Day, y.Day), strings.Compare(x.Identity, y.Identity), strings.Compare(x.Model, y.Model))
}
