// Package usagecmd is the bus-llm-usage command ("bus llm usage" through
// the bus dispatcher): it reads GET /v1/usage from a REST front door with
// the caller's token and prints the report as a table (default), CSV or
// JSON. A caller sees their own usage; a token with the admin scope
// (llm:admin) sees everyone's.
//
// It imports internal/usage, internal/cliutil and internal/busconfig; only
// cmd/bus-llm-usage imports it.
package usagecmd

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Name is the command name.
const Name = "bus-llm-usage"

// Environment variables read by the command.
const (
	// URLVar is the front door's base URL.
	URLVar = "BUS_LLM_URL"
	// TokenVar holds the caller's token; without it the token file is read.
	TokenVar = "BUS_API_TOKEN"
)

// DefaultURL is the front door of the local stack.
const DefaultURL = "http://127.0.0.1:8080"

type options struct {
	url, start, end, groupBy, identity, format, tokenFile string
	limit                                                 int
	timeout                                               time.Duration
	groups                                                []usage.Dimension
}

func parse(args []string, io cliutil.IO) (*options, error) {
	env := io.Env
	o := &options{}
	tokenFile, err := busconfig.TokenFile(env)
	if err != nil {
		tokenFile = ""
	}
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.StringVar(&o.url, "url", cliutil.String(env, URLVar, DefaultURL), "front door base URL (env "+URLVar+")")
	fs.StringVar(&o.start, "start", "", "start of the range, included: RFC 3339 time, date (UTC) or Unix seconds (default: start of this UTC month)")
	fs.StringVar(&o.end, "end", "", "end of the range, excluded (default: now)")
	fs.StringVar(&o.groupBy, "group-by", "identity", "identity, model, day (comma-separated), request (one row per request) or none (one total)")
	fs.StringVar(&o.identity, "identity", "", "only this identity's usage (another identity's needs an llm:admin token)")
	fs.IntVar(&o.limit, "limit", 0, fmt.Sprintf("most requests listed with --group-by request (default %d, at most %d)", usage.DefaultLimit, usage.MaxLimit))
	fs.StringVar(&o.format, "format", "table", "output: table, csv or json")
	fs.StringVar(&o.tokenFile, "token-file", tokenFile, "token file, read when "+TokenVar+" is not set")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the answer")
	if err := cliutil.ParseFlags(fs, args, io.Stdout); err != nil {
		return nil, err
	}
	switch o.format {
	case "table", "csv", "json":
	default:
		return nil, cliutil.Usagef("--format must be table, csv or json, not %q", o.format)
	}
	if o.groupBy != "none" {
		if o.groups, err = usage.ParseGroupBy(o.groupBy); err != nil {
			return nil, cliutil.Usagef("--group-by: %v", err)
		}
	}
	for _, t := range []struct{ flag, v string }{{"start", o.start}, {"end", o.end}} {
		if t.v == "" {
			continue
		}
		if _, err := usage.ParseTime(t.v); err != nil {
			return nil, cliutil.Usagef("--%s: %v", t.flag, err)
		}
	}
	if o.limit < 0 || o.limit > usage.MaxLimit {
		return nil, cliutil.Usagef("--limit must be from 1 to %d", usage.MaxLimit)
	}
	if o.timeout <= 0 {
		return nil, cliutil.Usagef("--timeout must be positive, not %s", o.timeout)
	}
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, cliutil.Usagef("--url %q is not an http(s) URL", o.url)
	}
	return o, nil
}

// Run runs the command.
func Run(ctx context.Context, args []string, io cliutil.IO) int {
	return cliutil.Run(ctx, args, io, Name, parse, run)
}

func run(ctx context.Context, o *options, io cliutil.IO) error {
	token, err := readToken(io.Env, o.tokenFile)
	if err != nil {
		return err
	}
	doc, err := fetch(ctx, o, token)
	if err != nil {
		return err
	}
	switch o.format {
	case "json":
		enc := json.NewEncoder(io.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	case "csv":
		return writeCSV(io.Stdout, doc)
	}
	return writeTable(io.Stdout, doc)
}

// readToken returns BUS_API_TOKEN, else the token file's content.
func readToken(env busconfig.Env, file string) (string, error) {
	if t := strings.TrimSpace(env.Getenv(TokenVar)); t != "" {
		return t, nil
	}
	hint := `e.g. bus operator token issue --local --scope llm:proxy --format token`
	if file == "" {
		return "", cliutil.Usagef("no token: set %s (%s)", TokenVar, hint)
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return "", cliutil.Usagef("no token: set %s or write one to %s (%s)", TokenVar, file, hint)
	}
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", cliutil.Usagef("token file %s is empty", file)
	}
	return t, nil
}

// fetch calls GET /v1/usage.
func fetch(ctx context.Context, o *options, token string) (*usage.Document, error) {
	base := strings.TrimRight(o.url, "/")
	base = strings.TrimSuffix(base, "/v1")
	q := url.Values{}
	for k, v := range map[string]string{"start": o.start, "end": o.end, "identity": o.identity} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if len(o.groups) > 0 {
		parts := make([]string, len(o.groups))
		for i, d := range o.groups {
			parts[i] = string(d)
		}
		q.Set("group_by", strings.Join(parts, ","))
	}
	if o.limit > 0 {
		q.Set("limit", strconv.Itoa(o.limit))
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/usage?"+q.Encode(), nil)
	if err != nil {
		return nil, cliutil.Usagef("--url: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s/v1/usage: %w", base, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s/v1/usage: read the answer: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		if e, ok := llmapi.ParseErrorBody(body); ok {
			code := ""
			if e.Code != nil {
				code = " " + *e.Code
			}
			return nil, fmt.Errorf("%d%s: %s", resp.StatusCode, code, e.Message)
		}
		return nil, fmt.Errorf("GET %s/v1/usage: %s", base, resp.Status)
	}
	var doc usage.Document
	if err := json.Unmarshal(body, &doc); err != nil || doc.Object != "usage.report" {
		return nil, fmt.Errorf("GET %s/v1/usage: the answer is not a usage report", base)
	}
	return &doc, nil
}

// columns are the report's columns: the group keys (or a request's
// fields), then the counts.
func columns(doc *usage.Document) []string {
	var cols []string
	listing := false
	for _, d := range doc.GroupBy {
		if d == usage.DimRequest {
			listing = true
			cols = append(cols, "time", "request_id", "identity", "model", "operation", "status", "duration_ms")
			continue
		}
		cols = append(cols, string(d))
	}
	if !listing {
		cols = append(cols, "requests")
	}
	return append(cols, "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")
}

// cells are r's values for cols.
func cells(r usage.Row, cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		switch c {
		case "day":
			out[i] = r.Day
		case "identity":
			out[i] = r.Identity
		case "model":
			out[i] = r.Model
		case "time":
			if r.Time != nil {
				out[i] = r.Time.UTC().Format(time.RFC3339Nano)
			}
		case "request_id":
			out[i] = r.RequestID
		case "operation":
			out[i] = r.Operation
		case "status":
			out[i] = strconv.Itoa(r.Status)
		case "duration_ms":
			out[i] = strconv.FormatInt(r.DurationMS, 10)
		case "requests":
			out[i] = strconv.FormatInt(r.Requests, 10)
		case "input_tokens":
			out[i] = strconv.FormatInt(r.Input, 10)
		case "cached_tokens":
			out[i] = strconv.FormatInt(r.Cached, 10)
		case "output_tokens":
			out[i] = strconv.FormatInt(r.Output, 10)
		case "reasoning_tokens":
			out[i] = strconv.FormatInt(r.Reasoning, 10)
		case "total_tokens":
			out[i] = strconv.FormatInt(r.Total, 10)
		}
	}
	return out
}

// writeCSV prints a header line and one line per row.
func writeCSV(w io.Writer, doc *usage.Document) error {
	cols := columns(doc)
	cw := csv.NewWriter(w)
	_ = cw.Write(cols)
	for _, r := range doc.Data {
		_ = cw.Write(cells(r, cols))
	}
	cw.Flush()
	return cw.Error()
}

// writeTable prints the range, then aligned columns, then the totals of
// a report with more than one row.
func writeTable(w io.Writer, doc *usage.Document) error {
	scope := "all identities"
	if doc.Identity != "" {
		scope = "identity " + doc.Identity
	}
	fmt.Fprintf(w, "Usage of %s from %s to %s\n\n", scope, doc.Start.UTC().Format(time.RFC3339), doc.End.UTC().Format(time.RFC3339))
	cols := columns(doc)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := make([]string, len(cols))
	for i, c := range cols {
		header[i] = strings.ToUpper(strings.TrimSuffix(c, "_tokens"))
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	var total usage.Row
	for _, r := range doc.Data {
		fmt.Fprintln(tw, strings.Join(cells(r, cols), "\t")+"\t")
		total.Requests += r.Requests
		total.Input += r.Input
		total.Cached += r.Cached
		total.Output += r.Output
		total.Reasoning += r.Reasoning
		total.Total += r.Total
	}
	if len(doc.Data) > 1 {
		row := cells(total, cols)
		keys := len(cols) - 5 // the key columns (and requests, for groups)
		if !isListing(doc) {
			keys--
		}
		for i := range keys {
			row[i] = ""
		}
		row[0] = "TOTAL"
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if len(doc.Data) == 0 {
		fmt.Fprintln(tw, "(no usage)\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if doc.HasMore {
		fmt.Fprintf(w, "\n(more requests in the range: raise --limit or narrow --start/--end)\n")
	}
	return nil
}

func isListing(doc *usage.Document) bool {
	return len(doc.GroupBy) == 1 && doc.GroupBy[0] == usage.DimRequest
}
