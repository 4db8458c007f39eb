package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Document is the JSON answer of GET /v1/usage.
type Document struct {
	// Object is always "usage.report".
	Object string `json:"object"`
	// Start and End are the range the report covers (End excluded).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// GroupBy is the grouping, in canonical order (empty: one total row).
	GroupBy []Dimension `json:"group_by"`
	// Identity is the identity the report is restricted to, if any.
	Identity string `json:"identity,omitempty"`
	// Data are the report's rows.
	Data []Row `json:"data"`
	// HasMore is true when a request listing stopped at its limit.
	HasMore bool `json:"has_more"`
}

// Caller is who asks for a report.
type Caller struct {
	// Identity is the caller's JWT sub.
	Identity string
	// Admin callers may read every identity's usage.
	Admin bool
}

// flushTimeout bounds how long a report waits for this process's queued
// records to be written first.
const flushTimeout = 5 * time.Second

// Handler serves GET /v1/usage from a Writer's ledger.
type Handler struct {
	w   *Writer
	now func() time.Time
}

// NewHandler returns the handler of w's ledger.
func NewHandler(w *Writer) *Handler { return &Handler{w: w, now: time.Now} }

// Serve answers a usage request of c (already authenticated):
//
//	GET /v1/usage?start=&end=&group_by=identity|model|day[,...]|request&identity=&limit=
//
// start and end are RFC 3339 times, dates (UTC midnight) or Unix seconds;
// they default to the start of the current UTC month and now. A caller
// who is not an admin reads only their own usage (identity may name only
// them). The records this process has queued are written first, so a
// caller sees their own requests at once.
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request, c Caller) {
	q, apiErr := h.parse(r, c)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	ctx := r.Context()
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	_ = h.w.Flush(fctx) // a failing ledger shows in the query below
	cancel()
	rep, err := h.w.Ledger().Query(ctx, q)
	if err != nil {
		h.w.log.Warn("usage query failed", "identity", c.Identity, "err", err)
		writeError(w, llmapi.NewError(http.StatusServiceUnavailable, "", "usage_unavailable", "", "The usage ledger cannot be read right now; retry shortly."))
		return
	}
	doc := Document{Object: "usage.report", Start: q.Start, End: q.End, GroupBy: q.GroupBy, Identity: q.Identity, Data: rep.Rows, HasMore: rep.HasMore}
	if doc.GroupBy == nil {
		doc.GroupBy = []Dimension{}
	}
	if doc.Data == nil {
		doc.Data = []Row{}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		writeError(w, llmapi.NewError(http.StatusInternalServerError, "", "internal_error", "", "could not encode the answer"))
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// parse reads the query parameters.
func (h *Handler) parse(r *http.Request, c Caller) (Query, *llmapi.APIError) {
	v := r.URL.Query()
	now := h.now().UTC()
	q := Query{
		Start: time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC),
		End:   now,
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"start", &q.Start}, {"end", &q.End}} {
		if s := v.Get(p.name); s != "" {
			t, err := ParseTime(s)
			if err != nil {
				return q, llmapi.InvalidRequest(p.name, "invalid_value", err.Error())
			}
			*p.dst = t
		}
	}
	if !q.End.After(q.Start) {
		return q, llmapi.InvalidRequest("end", "invalid_value", "'end' must be after 'start'.")
	}
	var err error
	if q.GroupBy, err = ParseGroupBy(v["group_by"]...); err != nil {
		return q, llmapi.InvalidRequest("group_by", "invalid_value", "Invalid 'group_by': "+err.Error()+".")
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return q, llmapi.InvalidRequest("limit", "invalid_value", fmt.Sprintf("'limit' must be a number from 1 to %d.", MaxLimit))
		}
		q.Limit = n
	}
	q.Identity = v.Get("identity")
	if !c.Admin {
		if q.Identity != "" && q.Identity != c.Identity {
			return q, llmapi.NewError(http.StatusForbidden, llmapi.TypePermission, "insufficient_scope", "identity",
				"Only an admin token may read another identity's usage.")
		}
		q.Identity = c.Identity
	}
	return q, nil
}

// ParseTime reads a time as an RFC 3339 time, a date ("2006-01-02", UTC
// midnight) or Unix seconds.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2006-01-02T15:04:05Z), a date (2006-01-02) or Unix seconds", s)
}

func writeJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, e *llmapi.APIError) { writeJSON(w, e.Status, e.JSON()) }
