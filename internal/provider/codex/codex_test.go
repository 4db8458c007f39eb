package codex_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/selftest"
	pathstack "github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

type stack struct {
	fake     *fakemodel.Server
	provider *codex.Provider
	req      *correlator.Requester
	workdir  string
	home     string
	cmd      string
	st       *pathstack.Stack
	store    respstore.Store
}

// options tune newStackWith.
type options struct {
	timeout   time.Duration
	processes int
	cfg       func(*codex.Config) // adjusts the provider's config
}

// newStack runs the whole bus path on the real codex binary: an in-process
// Events API, a worker on the codex provider (package stack), and a
// requester on the bus.
func newStack(t *testing.T, timeout time.Duration, processes int) *stack {
	return newStackWith(t, options{timeout: timeout, processes: processes})
}

func newStackWith(t *testing.T, o options) *stack {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 60 * time.Second
	}
	if o.processes == 0 {
		o.processes = 1
	}
	s := &stack{cmd: fakemodel.CodexCommand(t), fake: fakemodel.New(t), workdir: t.TempDir(), store: respstore.NewMemory()}
	s.home = s.fake.WriteCodexHome(t)
	cfg := codex.Config{
		Command: s.cmd, Workdir: s.workdir, Processes: o.processes,
		Env: []string{"CODEX_HOME=" + s.home}, Logger: slog.New(slog.DiscardHandler),
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := codex.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	s.provider = p
	st, err := pathstack.Start(ctx, pathstack.Config{Timeout: o.timeout, Worker: &pathstack.WorkerConfig{
		Executor: &executor.Executor{Provider: p, Catalog: catalog.Default(), Store: s.store}, Consumer: "codex-test", Concurrency: 8,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	s.st = st
	rc, err := st.ServiceClient("requester")
	if err != nil {
		t.Fatal(err)
	}
	r := correlator.StartRequester(rc, correlator.Options{})
	t.Cleanup(func() { _ = r.Close() })
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	s.req = r
	return s
}

func (s *stack) do(t *testing.T, op llmapi.Operation, stream bool, body string) *correlator.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := s.req.Do(ctx, llmapi.ExecutionEventRequest{Operation: op, Model: modelOf(body), Stream: stream, IdentityID: "u1", Body: json.RawMessage(body)}, correlator.DoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestPlainReplyAllOperations(t *testing.T) {
	s := newStack(t, 60*time.Second, 1)
	s.fake.SetReply(fakemodel.Reply{Text: "Hello from the model", Usage: fakemodel.Usage{InputTokens: 321, CachedTokens: 100, OutputTokens: 12, ReasoningTokens: 5}})
	bodies := map[llmapi.Operation]string{
		llmapi.OpChatCompletions: `{"model":"codex-chatgpt","messages":[{"role":"user","content":"Say hello"}]}`,
		llmapi.OpResponses:       `{"model":"codex-chatgpt","input":"Say hello"}`,
		llmapi.OpCompletions:     `{"model":"codex-chatgpt","prompt":"Say hello"}`,
	}
	for _, op := range llmapi.Operations() {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", op, stream), func(t *testing.T) {
				body := bodies[op]
				if stream {
					body = strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1)
				}
				res := s.do(t, op, stream, body)
				if res.Response.StatusCode != 200 {
					t.Fatalf("status %d: %s", res.Response.StatusCode, res.Response.Body)
				}
				text, err := selftest.AnswerText(op, res.Response.Body)
				if err != nil || text != "Hello from the model" {
					t.Fatalf("answer %q (%v)", text, err)
				}
				// Usage is exactly what the model reported.
				u := res.Response.Usage
				if u == nil || u.PromptTokens != 321 || u.CompletionTokens != 12 || u.TotalTokens != 333 || u.CachedTokens != 100 || u.ReasoningTokens != 5 {
					t.Fatalf("usage %+v", u)
				}
				var body2 struct {
					Model string `json:"model"`
					Usage struct {
						PromptTokens  int64 `json:"prompt_tokens"`
						InputTokens   int64 `json:"input_tokens"`
						PromptDetails struct {
							Cached int64 `json:"cached_tokens"`
						} `json:"prompt_tokens_details"`
						InputDetails struct {
							Cached int64 `json:"cached_tokens"`
						} `json:"input_tokens_details"`
					} `json:"usage"`
				}
				_ = json.Unmarshal(res.Response.Body, &body2)
				if body2.Model != "codex-chatgpt" || body2.Usage.PromptTokens+body2.Usage.InputTokens != 321 || body2.Usage.PromptDetails.Cached+body2.Usage.InputDetails.Cached != 100 {
					t.Fatalf("body model/usage: %s", res.Response.Body)
				}
				if stream {
					streamed, err := selftest.StreamedText(op, res.Chunks)
					if err != nil || streamed != "Hello from the model" {
						t.Fatalf("streamed %q (%v)", streamed, err)
					}
				}
			})
		}
	}
}

func TestHistoryAndSystemPromptReachTheModel(t *testing.T) {
	s := newStack(t, 60*time.Second, 1)
	s.fake.SetReply(fakemodel.Reply{Text: "Paris it is"})
	res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[
		{"role":"system","content":"You are a geography tutor."},
		{"role":"user","content":"Capital of France?"},
		{"role":"assistant","content":"Paris."},
		{"role":"user","content":"And of Italy?"}]}`)
	if res.Response.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.Response.StatusCode, res.Response.Body)
	}
	reqs := s.fake.Requests()
	if len(reqs) == 0 {
		t.Fatal("the model received nothing")
	}
	msgs := reqs[len(reqs)-1].Messages()
	var convo []string
	sawSystem := false
	for _, m := range msgs {
		if m.Role == "developer" && strings.Contains(m.Text, "You are a geography tutor.") {
			sawSystem = true
		}
		if m.Role == "user" || m.Role == "assistant" {
			if strings.Contains(m.Text, "<environment_context>") || strings.Contains(m.Text, "AGENTS.md") {
				continue // Codex's own context message
			}
			convo = append(convo, m.Role+":"+m.Text)
		}
	}
	if !sawSystem {
		t.Fatalf("system prompt not sent as a developer message: %+v", msgs)
	}
	want := []string{"user:Capital of France?", "assistant:Paris.", "user:And of Italy?"}
	if fmt.Sprint(convo) != fmt.Sprint(want) {
		t.Fatalf("conversation reached the model as %q, want %q", convo, want)
	}
}

func TestJSONSchemaOutput(t *testing.T) {
	s := newStack(t, 60*time.Second, 1)
	s.fake.SetReply(fakemodel.Reply{Text: `{"city":"Rome"}`})
	schema := `{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}`
	res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"Capital of Italy as JSON"}],
		"response_format":{"type":"json_schema","json_schema":{"name":"city","strict":true,"schema":`+schema+`}}}`)
	if res.Response.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.Response.StatusCode, res.Response.Body)
	}
	reqs := s.fake.Requests()
	format := reqs[len(reqs)-1].TextFormat()
	if format == nil || format["type"] != "json_schema" {
		t.Fatalf("text.format sent to the model: %v", format)
	}
	sent, _ := json.Marshal(format["schema"])
	var got, want any
	_ = json.Unmarshal(sent, &got)
	_ = json.Unmarshal([]byte(schema), &want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("schema sent %s, want %s", sent, schema)
	}
	text, _ := selftest.AnswerText(llmapi.OpChatCompletions, res.Response.Body)
	var city map[string]string
	if err := json.Unmarshal([]byte(text), &city); err != nil || city["city"] != "Rome" {
		t.Fatalf("answer %q is not the JSON object", text)
	}

	// Responses text.format json_schema maps the same way; json_object is
	// honoured by instruction.
	s.do(t, llmapi.OpResponses, false, `{"model":"codex-chatgpt","input":"x","text":{"format":{"type":"json_schema","name":"city","schema":`+schema+`}}}`)
	reqs = s.fake.Requests()
	if f := reqs[len(reqs)-1].TextFormat(); f == nil || f["type"] != "json_schema" {
		t.Fatalf("responses text.format not sent: %v", f)
	}
	s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}`)
	reqs = s.fake.Requests()
	found := false
	for _, m := range reqs[len(reqs)-1].Messages() {
		found = found || (m.Role == "developer" && strings.Contains(m.Text, "single valid JSON object"))
	}
	if !found {
		t.Fatal("json_object instruction did not reach the model")
	}
}

func TestModelErrorsMapToStatuses(t *testing.T) {
	s := newStack(t, 60*time.Second, 1)
	cases := []struct {
		status int
		want   int
		code   string
	}{
		{401, http.StatusServiceUnavailable, "codex_unauthorized"},
		{429, http.StatusTooManyRequests, "rate_limit_exceeded"},
		{500, http.StatusBadGateway, "upstream_error"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.status), func(t *testing.T) {
			s.fake.SetReply(fakemodel.Reply{Status: c.status, ErrorMessage: "nope from http://internal.example/v1"})
			res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"hi"}]}`)
			e, ok := llmapi.ParseErrorBody(res.Response.Body)
			if res.Response.StatusCode != c.want || !ok || e.Code == nil || *e.Code != c.code {
				t.Fatalf("status %d body %s, want %d %s", res.Response.StatusCode, res.Response.Body, c.want, c.code)
			}
			if strings.Contains(string(res.Response.Body), "internal.example") {
				t.Fatalf("upstream URL leaked: %s", res.Response.Body)
			}
		})
	}
}

func TestTimeoutInterruptsTheTurn(t *testing.T) {
	s := newStack(t, 2*time.Second, 1)
	hold := make(chan struct{})
	defer close(hold)
	s.fake.SetReply(fakemodel.Reply{Text: "never finished", Hold: hold})
	start := time.Now()
	res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"hi"}]}`)
	if res.Response.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d: %s", res.Response.StatusCode, res.Response.Body)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatal("the timed-out turn was not interrupted")
	}
	// The pool is still healthy.
	s.fake.SetReply(fakemodel.Reply{Text: "fine"})
	if res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"again"}]}`); res.Response.StatusCode != 200 {
		t.Fatalf("after timeout: %d %s", res.Response.StatusCode, res.Response.Body)
	}
}

func TestKilledProcessGivesOneErrorThenRecovers(t *testing.T) {
	s := newStack(t, 60*time.Second, 1)
	hold := make(chan struct{})
	defer close(hold)
	s.fake.SetReply(fakemodel.Reply{Text: "held", Hold: hold})
	type out struct {
		res *correlator.Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := s.req.Do(ctx, llmapi.ExecutionEventRequest{Operation: llmapi.OpChatCompletions, Model: "codex-chatgpt",
			Body: json.RawMessage(`{"model":"codex-chatgpt","messages":[{"role":"user","content":"hi"}]}`)}, correlator.DoOptions{Settle: 300 * time.Millisecond})
		done <- out{res, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.fake.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	procs := s.provider.Pool().Processes()
	if len(procs) != 1 {
		t.Fatalf("%d processes", len(procs))
	}
	if err := syscall.Kill(-procs[0].PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.res.Response.StatusCode != http.StatusBadGateway || o.res.Duplicates != 0 {
		t.Fatalf("killed turn: status %d dups %d: %s", o.res.Response.StatusCode, o.res.Duplicates, o.res.Response.Body)
	}
	s.fake.SetReply(fakemodel.Reply{Text: "back"})
	res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"again"}]}`)
	if text, _ := selftest.AnswerText(llmapi.OpChatCompletions, res.Response.Body); res.Response.StatusCode != 200 || text != "back" {
		t.Fatalf("after the crash: %d %s", res.Response.StatusCode, res.Response.Body)
	}
}

// In agent mode Codex offers its own shell tool; with approvals denied (the
// default) a command the model asks for is declined and never runs.
func TestShellCommandIsDeniedAndDoesNotRun(t *testing.T) {
	s := newStack(t, 60*time.Second, 1)
	marker := filepath.Join(s.workdir, "pwned")
	s.fake.Enqueue(fakemodel.Reply{ShellCommand: "touch " + marker})
	s.fake.SetReply(fakemodel.Reply{Text: "I could not run it"})
	res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-agent","messages":[{"role":"user","content":"create a file"}]}`)
	if res.Response.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.Response.StatusCode, res.Response.Body)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the command ran: %v", err)
	}
	// The model was told the command was rejected.
	reqs := s.fake.Requests()
	outputs := reqs[len(reqs)-1].ItemsOfType("function_call_output")
	if len(outputs) == 0 {
		t.Fatal("no tool output went back to the model")
	}
	if b, _ := json.Marshal(outputs); !strings.Contains(strings.ToLower(string(b)), "reject") && !strings.Contains(strings.ToLower(string(b)), "declin") {
		t.Fatalf("tool output does not say the command was rejected: %s", b)
	}
}

func TestConcurrentRequestsOnThePool(t *testing.T) {
	s := newStack(t, 60*time.Second, 2)
	s.fake.SetHandler(func(r fakemodel.Request) fakemodel.Reply {
		return fakemodel.Reply{Text: "answer to " + r.LastUserText()}
	})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			q := fmt.Sprintf("question %d", i)
			res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"`+q+`"}]}`)
			if text, _ := selftest.AnswerText(llmapi.OpChatCompletions, res.Response.Body); text != "answer to "+q {
				t.Errorf("%s: got %q (%d)", q, text, res.Response.StatusCode)
			}
		})
	}
	wg.Wait()
}

func TestNotInstalled(t *testing.T) {
	_, err := codex.New(context.Background(), codex.Config{Command: filepath.Join(t.TempDir(), "no-codex"), Workdir: t.TempDir()})
	if !errors.Is(err, codex.ErrNotInstalled) {
		t.Fatalf("got %v, want ErrNotInstalled", err)
	}
}

func TestImagesAndEffortReachTheModel(t *testing.T) {
	s := newStack(t, 60*time.Second, 1)
	s.fake.SetReply(fakemodel.Reply{Text: "a red pixel"})
	const pixel = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
	res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","reasoning_effort":"high","messages":[{"role":"user","content":[
		{"type":"text","text":"What is in this image?"},{"type":"image_url","image_url":{"url":"`+pixel+`"}}]}]}`)
	if res.Response.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.Response.StatusCode, res.Response.Body)
	}
	reqs := s.fake.Requests()
	raw, _ := json.Marshal(reqs[len(reqs)-1].Input())
	if !strings.Contains(string(raw), `"input_image"`) || !strings.Contains(string(raw), pixel[:40]) {
		t.Fatalf("the image did not reach the model as input_image: %s", raw)
	}
	var body struct {
		Reasoning struct {
			Effort string `json:"effort"`
		} `json:"reasoning"`
	}
	_ = json.Unmarshal(reqs[len(reqs)-1].Body, &body)
	if body.Reasoning.Effort != "high" {
		t.Fatalf("reasoning effort sent to the model: %q", body.Reasoning.Effort)
	}
}

func TestNotLoggedIn(t *testing.T) {
	cmd := fakemodel.CodexCommand(t)
	// An empty CODEX_HOME: no credentials and the default OpenAI provider.
	_, err := codex.New(context.Background(), codex.Config{Command: cmd, Workdir: t.TempDir(), Env: []string{"CODEX_HOME=" + t.TempDir()}})
	if !errors.Is(err, codex.ErrNotLoggedIn) {
		t.Fatalf("got %v, want ErrNotLoggedIn", err)
	}
}

// modelOf is the model a request body asks for.
func modelOf(body string) string {
	var b struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal([]byte(body), &b)
	return b.Model
}
