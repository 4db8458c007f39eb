package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	ledger "github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// The usage ledger, end to end: requests of every operation, plain and
// streaming, through the official SDK, then GET /v1/ledger.

// ledgers opens each kind of ledger for a test.
var ledgers = []struct {
	name string
	open func(t *testing.T) ledger.Ledger
}{
	{"memory", func(*testing.T) ledger.Ledger { return ledger.NewMemory(ledger.MemoryOptions{}) }},
	{"redis", func(t *testing.T) ledger.Ledger {
		l, err := ledger.OpenRedis(context.Background(), ledger.RedisConfig{Addr: redistest.Start(t), Prefix: "e2e:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}},
	{"postgres", func(t *testing.T) ledger.Ledger {
		l, err := ledger.OpenPostgres(context.Background(), pgtest.Start(t), 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}},
}

// watchedLedger tells a test which requests a ledger holds: the front
// door queues a record after the caller has the answer (a stream's after
// its response event, which may follow the last frame), so a test waits
// for the records before it reads them back.
type watchedLedger struct {
	ledger.Ledger
	mu      sync.Mutex
	ids     map[string]bool
	changed chan struct{} // closed and replaced on every append
}

func watch(l ledger.Ledger) *watchedLedger {
	return &watchedLedger{Ledger: l, ids: map[string]bool{}, changed: make(chan struct{})}
}

func (w *watchedLedger) Append(ctx context.Context, recs []ledger.Record) error {
	if err := w.Ledger.Append(ctx, recs); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range recs {
		w.ids[r.RequestID] = true
	}
	close(w.changed)
	w.changed = make(chan struct{})
	return nil
}

// waitFor waits until the ledger holds the records of ids.
func (w *watchedLedger) waitFor(t *testing.T, ids ...string) {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		w.mu.Lock()
		missing := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return w.ids[id] })
		changed := w.changed
		w.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("the ledger never got the records of %v", missing)
		}
	}
}

// startWithLedger runs a stack on the static provider whose front door
// records usage in l.
func startWithLedger(t *testing.T, l ledger.Ledger, cfg stack.Config) *env {
	t.Helper()
	w := ledger.NewWriter(l, ledger.WriterOptions{Logger: testLogger(t)})
	t.Cleanup(func() { // after the stack (cleanups run last first)
		if err := w.Close(reqCtx(t)); err != nil {
			t.Errorf("usage writer: %v", err)
		}
		if st := w.Stats(); st.Dropped != 0 || st.Failed != 0 {
			t.Errorf("usage records lost: %+v", st)
		}
	})
	cfg.Usage = w
	return newEnvWith(t, static.New(), cfg)
}

// sent is one request and the usage it must have in the ledger.
type sent struct {
	id, identity, op string
	want             ledger.Tokens
}

// staticTokens is the static provider's usage for a prompt of n words:
// it echoes "Echo: " and the prompt.
func staticTokens(n int64) ledger.Tokens {
	return ledger.Tokens{Input: n, Output: n + 1, Total: 2*n + 1}
}

// requestID returns the X-Request-Id of an answer.
func requestID(t *testing.T, r *http.Response) string {
	t.Helper()
	if r == nil {
		t.Fatal("no HTTP response captured")
	}
	id := r.Header.Get("X-Request-Id")
	if id == "" {
		t.Fatal("no X-Request-Id")
	}
	return id
}

// getUsage calls GET /v1/usage?query on base with token.
func getUsage(t *testing.T, e *env, base, token, query string) (int, ledger.Document, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(reqCtx(t), http.MethodGet, base+"/usage?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var doc ledger.Document
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("usage answer %s: %v", b, err)
		}
	}
	return resp.StatusCode, doc, string(b)
}

func token(t *testing.T, e *env, subject string, scopes ...string) string {
	t.Helper()
	tok, err := e.st.IssueToken(subject, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestUsageLedgerExactTokens(t *testing.T) {
	for _, lg := range ledgers {
		t.Run(lg.name, func(t *testing.T) {
			l := watch(lg.open(t))
			runUsageLedger(t, startWithLedger(t, l, stack.Config{}), l)
		})
	}
}

func runUsageLedger(t *testing.T, e *env, l *watchedLedger) {
	alice := e.sdk(token(t, e, "alice", llmapi.Scope))
	bob := e.sdk(token(t, e, "bob", llmapi.Scope))
	var all []sent
	var raw *http.Response

	// alice: chat (2 words)
	c, err := alice.Chat.Completions.New(reqCtx(t), chatParams(), option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	checkCompletionUsage(t, c.Usage, usage{prompt: 2, completion: 3, total: 5})
	all = append(all, sent{requestID(t, raw), "alice", "chat.completions", staticTokens(2)})

	// alice: responses (4 words)
	p := responseParams()
	p.Input = responses.ResponseNewParamsInputUnion{OfString: openai.String("one two three four")}
	r, err := alice.Responses.New(reqCtx(t), p, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	checkResponseUsage(t, r.Usage, usage{prompt: 4, completion: 5, total: 9})
	all = append(all, sent{requestID(t, raw), "alice", "responses", staticTokens(4)})

	// bob: completions (6 words)
	cp := completionParams()
	cp.Prompt = openai.CompletionNewParamsPromptUnion{OfString: openai.String("a b c d e f")}
	if _, err := bob.Completions.New(reqCtx(t), cp, option.WithResponseInto(&raw)); err != nil {
		t.Fatal(err)
	}
	all = append(all, sent{requestID(t, raw), "bob", "completions", staticTokens(6)})

	// alice: streaming chat with the usage frame (3 words)
	sp := chatParams()
	sp.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x y z")}
	sp.StreamOptions.IncludeUsage = openai.Bool(true)
	cs := alice.Chat.Completions.NewStreaming(reqCtx(t), sp, option.WithResponseInto(&raw))
	var streamed openai.CompletionUsage
	for cs.Next() {
		if ch := cs.Current(); len(ch.Choices) == 0 {
			streamed = ch.Usage
		}
	}
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
	checkCompletionUsage(t, streamed, usage{prompt: 3, completion: 4, total: 7})
	all = append(all, sent{requestID(t, raw), "alice", "chat.completions", staticTokens(3)})
	_ = cs.Close()

	// bob: streaming responses (2 words)
	rs := bob.Responses.NewStreaming(reqCtx(t), responseParams(), option.WithResponseInto(&raw))
	for rs.Next() {
		if ev := rs.Current(); ev.Type == "response.completed" {
			checkResponseUsage(t, ev.Response.Usage, usage{prompt: 2, completion: 3, total: 5})
		}
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	all = append(all, sent{requestID(t, raw), "bob", "responses", staticTokens(2)})
	_ = rs.Close()

	// alice: a streaming completion without a usage frame (7 words): the
	// client never sees the usage, the ledger has it from the response event.
	ccp := completionParams()
	ccp.Prompt = openai.CompletionNewParamsPromptUnion{OfString: openai.String("m n o p q r s")}
	ccs := alice.Completions.NewStreaming(reqCtx(t), ccp, option.WithResponseInto(&raw))
	for ccs.Next() {
	}
	if err := ccs.Err(); err != nil {
		t.Fatal(err)
	}
	all = append(all, sent{requestID(t, raw), "alice", "completions", staticTokens(7)})
	_ = ccs.Close()

	ids := make([]string, len(all))
	for i, s := range all {
		ids[i] = s.id
	}
	l.waitFor(t, ids...)

	admin := token(t, e, "ops", auth.ScopeLLMAdmin)
	t.Run("every request with its exact tokens", func(t *testing.T) {
		code, doc, body := getUsage(t, e, e.st.URL, admin, "group_by=request")
		if code != http.StatusOK || doc.Identity != "" {
			t.Fatalf("%d %s", code, body)
		}
		byID := map[string]ledger.Row{}
		for _, row := range doc.Data {
			byID[row.RequestID] = row
		}
		if len(doc.Data) != len(all) || len(byID) != len(all) {
			t.Fatalf("%d rows for %d requests: %s", len(doc.Data), len(all), body)
		}
		for _, s := range all {
			row, ok := byID[s.id]
			if !ok {
				t.Fatalf("request %s (%s %s) is not in the ledger: %s", s.id, s.identity, s.op, body)
			}
			if row.Identity != s.identity || row.Operation != s.op || row.Model != model || row.Status != http.StatusOK ||
				row.Requests != 1 || row.Tokens != s.want || row.Time == nil || row.Day != ledger.Day(*row.Time) {
				t.Errorf("request %s: row %+v, want %s %s %s 200 %+v", s.id, row, s.identity, s.op, model, s.want)
			}
		}
	})
	sum := func(identity string) ledger.Row {
		r := ledger.Row{Identity: identity}
		for _, s := range all {
			if s.identity == identity {
				r.Requests++
				r.Input += s.want.Input
				r.Output += s.want.Output
				r.Total += s.want.Total
			}
		}
		return r
	}
	t.Run("admin grouped by identity", func(t *testing.T) {
		code, doc, body := getUsage(t, e, e.st.URL, admin, "group_by=identity")
		if code != http.StatusOK || len(doc.Data) != 2 || doc.Data[0] != sum("alice") || doc.Data[1] != sum("bob") {
			t.Fatalf("%d %s, want %+v and %+v", code, body, sum("alice"), sum("bob"))
		}
	})
	t.Run("a caller sees only their own usage", func(t *testing.T) {
		aliceTok := token(t, e, "alice", llmapi.Scope)
		code, doc, body := getUsage(t, e, e.st.URL, aliceTok, "group_by=request")
		if code != http.StatusOK || doc.Identity != "alice" || len(doc.Data) != 4 {
			t.Fatalf("%d %s", code, body)
		}
		for _, row := range doc.Data {
			if row.Identity != "alice" {
				t.Fatalf("alice sees %s's request %s", row.Identity, row.RequestID)
			}
		}
		code, doc, body = getUsage(t, e, e.st.URL, aliceTok, "group_by=identity,model")
		if code != http.StatusOK || len(doc.Data) != 1 || doc.Data[0].Identity != "alice" || doc.Data[0].Requests != 4 {
			t.Fatalf("%d %s", code, body)
		}
		code, _, body = getUsage(t, e, e.st.URL, aliceTok, "identity=bob")
		if code != http.StatusForbidden || !strings.Contains(body, "insufficient_scope") {
			t.Fatalf("alice asking for bob's usage: %d %s", code, body)
		}
		code, doc, body = getUsage(t, e, e.st.URL, token(t, e, "mallory", llmapi.Scope), "group_by=request")
		if code != http.StatusOK || len(doc.Data) != 0 {
			t.Fatalf("a caller without requests: %d %s", code, body)
		}
		code, _, body = getUsage(t, e, e.st.URL, token(t, e, "nobody", "events:listen"), "")
		if code != http.StatusForbidden {
			t.Fatalf("a token without llm:proxy or llm:admin: %d %s", code, body)
		}
		code, _, body = getUsage(t, e, e.st.URL, "not-a-token", "")
		if code != http.StatusUnauthorized {
			t.Fatalf("a bad token: %d %s", code, body)
		}
	})
}

// TestUsageLedgerCodexCounts: the ledger keeps Codex's exact counts,
// cached and reasoning tokens included, through the real codex binary.
func TestUsageLedgerCodexCounts(t *testing.T) {
	e := startCodex(t) // skips without codex
	// The codex stack has no ledger: add a front door that records.
	l := watch(ledger.NewMemory(ledger.MemoryOptions{}))
	w := ledger.NewWriter(l, ledger.WriterOptions{Logger: testLogger(t)})
	defer w.Close(reqCtx(t))
	fd, err := e.st.AddFrontDoor(reqCtx(t), stack.FrontDoorConfig{Usage: w})
	if err != nil {
		t.Fatal(err)
	}
	client := openai.NewClient(option.WithBaseURL(fd.URL), option.WithAPIKey(e.st.Token), option.WithMaxRetries(0), option.WithHTTPClient(e.http))
	var raw *http.Response
	if _, err := client.Chat.Completions.New(reqCtx(t), chatParams(), option.WithResponseInto(&raw)); err != nil {
		t.Fatal(err)
	}
	ids := []string{requestID(t, raw)}
	rs := client.Responses.NewStreaming(reqCtx(t), responseParams(), option.WithResponseInto(&raw))
	for rs.Next() {
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, requestID(t, raw))
	_ = rs.Close()
	l.waitFor(t, ids...)
	u := codexUsage()
	want := ledger.Tokens{Input: u.InputTokens, Cached: u.CachedTokens, Output: u.OutputTokens, Reasoning: u.ReasoningTokens, Total: u.InputTokens + u.OutputTokens}
	code, doc, body := getUsage(t, e, fd.URL, e.st.Token, "group_by=request")
	if code != http.StatusOK || len(doc.Data) != 2 {
		t.Fatalf("%d %s", code, body)
	}
	for i, row := range doc.Data {
		if row.RequestID != ids[i] || row.Tokens != want || row.Identity != stack.CallerSubject {
			t.Errorf("row %d: %+v, want request %s with %+v", i, row, ids[i], want)
		}
	}
}
