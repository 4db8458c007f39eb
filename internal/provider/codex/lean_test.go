package codex_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	pathstack "github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// modelRequest is what the model received, with the input items as the
// exact bytes Codex sent.
type modelRequest struct {
	Input          []json.RawMessage `json:"input"`
	Tools          []json.RawMessage `json:"tools"`
	PromptCacheKey string            `json:"prompt_cache_key"`
	Parallel       *bool             `json:"parallel_tool_calls"`
}

func decodeRequest(t *testing.T, r fakemodel.Request) modelRequest {
	t.Helper()
	var m modelRequest
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("model request is not JSON: %v", err)
	}
	return m
}

// item is one input item, decoded.
type item struct {
	Type    string `json:"type"`
	Role    string `json:"role"`
	Name    string `json:"name"`
	CallID  string `json:"call_id"`
	Output  string `json:"output"`
	Content []struct {
		Text string `json:"text"`
	} `json:"content"`
}

func (it item) text() string {
	var b strings.Builder
	for _, c := range it.Content {
		b.WriteString(c.Text)
	}
	return b.String()
}

func items(t *testing.T, raw []json.RawMessage) []item {
	t.Helper()
	out := make([]item, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// samePrefix asserts that each model request repeats the one before it
// byte for byte and adds to it, under one prompt_cache_key.
func samePrefix(t *testing.T, reqs []fakemodel.Request) {
	t.Helper()
	var prev modelRequest
	for i, r := range reqs {
		m := decodeRequest(t, r)
		if i > 0 {
			if m.PromptCacheKey == "" || m.PromptCacheKey != prev.PromptCacheKey {
				t.Fatalf("request %d has prompt_cache_key %q, request %d had %q", i, m.PromptCacheKey, i-1, prev.PromptCacheKey)
			}
			if len(m.Input) <= len(prev.Input) {
				t.Fatalf("request %d has %d input items, not more than the %d before", i, len(m.Input), len(prev.Input))
			}
			for j := range prev.Input {
				if !bytes.Equal(m.Input[j], prev.Input[j]) {
					t.Fatalf("request %d input item %d differs from request %d:\n%s\n%s", i, j, i-1, m.Input[j], prev.Input[j])
				}
			}
		}
		prev = m
	}
}

func chatBody(t *testing.T, fields map[string]any) string {
	t.Helper()
	if fields["model"] == nil {
		fields["model"] = "codex-chatgpt"
	}
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// chatAnswer is the message of a chat completion.
type chatAnswer struct {
	Content   *string `json:"content"`
	ToolCalls []struct {
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

func (s *stack) chat(t *testing.T, fields map[string]any) chatAnswer {
	t.Helper()
	res := s.do(t, llmapi.OpChatCompletions, false, chatBody(t, fields))
	if res.Response.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.Response.StatusCode, res.Response.Body)
	}
	var c struct {
		Choices []struct {
			Message chatAnswer `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(res.Response.Body, &c); err != nil || len(c.Choices) != 1 {
		t.Fatalf("body %s", res.Response.Body)
	}
	return c.Choices[0].Message
}

func user(text string) map[string]any { return map[string]any{"role": "user", "content": text} }
func assistant(text string) map[string]any {
	return map[string]any{"role": "assistant", "content": text}
}

var getWeather = []any{map[string]any{"type": "function", "function": map[string]any{
	"name": "get_weather", "description": "Weather of a city",
	"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
}}}

// In model mode the model receives the caller's instructions and message
// and the caller's tools, nothing of Codex's.
func TestModelModeSendsOnlyWhatTheCallerSent(t *testing.T) {
	s := newStack(t, 0, 1)
	s.fake.SetReply(fakemodel.Reply{Text: "ONE"})
	s.chat(t, map[string]any{"messages": []any{map[string]any{"role": "system", "content": "You are terse."}, user("Reply ONE")}})
	s.chat(t, map[string]any{"messages": []any{user("Reply TWO")}, "tools": getWeather})
	reqs := s.fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model requests", len(reqs))
	}
	plain := decodeRequest(t, reqs[0])
	got := items(t, plain.Input)
	if len(got) != 2 || got[0].Role != "developer" || got[0].text() != "You are terse." || got[1].Role != "user" || got[1].text() != "Reply ONE" {
		t.Fatalf("input %s", reqs[0].Body)
	}
	if len(plain.Tools) != 0 {
		t.Fatalf("tools offered without the caller's: %s", plain.Tools)
	}
	withTool := decodeRequest(t, reqs[1])
	got = items(t, withTool.Input)
	if len(got) != 2 || got[0].text() != codex.DefaultInstructions || got[1].text() != "Reply TWO" {
		t.Fatalf("input without instructions: %s", reqs[1].Body)
	}
	if names := reqs[1].ToolNames(); len(names) != 1 || names[0] != "get_weather" {
		t.Fatalf("tools %v, want only the caller's get_weather", names)
	}
	for _, r := range reqs {
		for _, banned := range []string{"environment_context", "permissions instructions", "skills_instructions", "Codex CLI", "exec_command"} {
			if bytes.Contains(r.Body, []byte(banned)) {
				t.Fatalf("model request carries Codex's %q: %s", banned, r.Body)
			}
		}
	}
}

// Agent mode is Codex as a coding agent: its own tools are offered, and
// with approvals a read-only command runs inside the sandbox.
func TestAgentModeRunsASandboxedCommand(t *testing.T) {
	s := newStackWith(t, options{cfg: func(c *codex.Config) { c.Approvals = codex.ApprovalsApprove }})
	if err := os.WriteFile(filepath.Join(s.workdir, "notes.txt"), []byte("marker-7431"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.fake.Enqueue(fakemodel.Reply{ShellCommand: "cat notes.txt"})
	s.fake.SetReply(fakemodel.Reply{Text: "done"})
	ans := s.chat(t, map[string]any{"model": catalog.AgentModelID, "messages": []any{user("read notes.txt")}})
	if ans.Content == nil || *ans.Content != "done" {
		t.Fatalf("answer %+v", ans)
	}
	reqs := s.fake.Requests()
	if names := reqs[0].ToolNames(); !strings.Contains(strings.Join(names, ","), "exec_command") {
		t.Fatalf("agent mode did not offer Codex's tools: %v", names)
	}
	outs := reqs[len(reqs)-1].ItemsOfType("function_call_output")
	if b, _ := json.Marshal(outs); len(outs) == 0 || !bytes.Contains(b, []byte("marker-7431")) {
		t.Fatalf("the command's output did not reach the model: %s", b)
	}
}

// The turns of a chat reach the model under one prompt_cache_key, each
// request the one before plus the new items.
func TestChatConversationKeepsOneCacheKey(t *testing.T) {
	s := newStack(t, 0, 1)
	s.fake.SetHandler(func(r fakemodel.Request) fakemodel.Reply { return fakemodel.Reply{Text: "A to " + r.LastUserText()} })
	history := []any{map[string]any{"role": "system", "content": "Be brief."}}
	for i := 1; i <= 4; i++ {
		q := fmt.Sprintf("question %d", i)
		history = append(history, user(q))
		ans := s.chat(t, map[string]any{"messages": history})
		if ans.Content == nil || *ans.Content != "A to "+q {
			t.Fatalf("turn %d: %+v", i, ans)
		}
		history = append(history, assistant(*ans.Content))
	}
	reqs := s.fake.Requests()
	if len(reqs) != 4 {
		t.Fatalf("%d model requests for 4 turns", len(reqs))
	}
	samePrefix(t, reqs)
	if n := s.provider.LiveThreads(); n != 1 {
		t.Fatalf("%d live threads after one conversation", n)
	}
}

// A previous_response_id chain is one conversation too.
func TestResponsesChainKeepsOneCacheKey(t *testing.T) {
	s := newStack(t, 0, 1)
	s.fake.SetHandler(func(r fakemodel.Request) fakemodel.Reply { return fakemodel.Reply{Text: "R: " + r.LastUserText()} })
	prev := ""
	for i := 1; i <= 3; i++ {
		body := map[string]any{"model": "codex-chatgpt", "instructions": "Be brief.", "input": fmt.Sprintf("step %d", i)}
		if prev != "" {
			body["previous_response_id"] = prev
		}
		b, _ := json.Marshal(body)
		res := s.do(t, llmapi.OpResponses, false, string(b))
		var r struct {
			ID string `json:"id"`
		}
		if res.Response.StatusCode != 200 || json.Unmarshal(res.Response.Body, &r) != nil {
			t.Fatalf("step %d: %d %s", i, res.Response.StatusCode, res.Response.Body)
		}
		prev = r.ID
	}
	reqs := s.fake.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d model requests", len(reqs))
	}
	samePrefix(t, reqs)
}

// A tool loop continues the same turn: each step comes back as soon as the
// model's response has ended, and the client's outputs answer the held
// calls, so the next model request extends the last under the same key.
func TestToolLoopContinuesTheTurn(t *testing.T) {
	s := newStack(t, 0, 1)
	s.fake.Enqueue(
		fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Name: "get_weather", CallID: "call_a", Arguments: `{"city":"Oslo"}`}}},
		fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Name: "get_weather", CallID: "call_b", Arguments: `{"city":"Rome"}`}}},
		fakemodel.Reply{Text: "Oslo rainy, Rome sunny"},
	)
	history := []any{user("weather in Oslo and Rome, one at a time")}
	for step, want := range []string{"call_a", "call_b"} {
		ans := s.chat(t, map[string]any{"messages": history, "tools": getWeather})
		if len(ans.ToolCalls) != 1 || ans.ToolCalls[0].ID != want {
			t.Fatalf("step %d: %+v", step, ans)
		}
		// The step came back while the turn waits: the model has not been
		// asked again before the client answers.
		if n := len(s.fake.Requests()); n != step+1 {
			t.Fatalf("step %d: %d model requests before the client answered", step, n)
		}
		tc := ans.ToolCalls[0]
		history = append(history,
			map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": tc.ID, "type": "function", "function": map[string]any{"name": tc.Function.Name, "arguments": tc.Function.Arguments}}}},
			map[string]any{"role": "tool", "tool_call_id": tc.ID, "content": "result " + tc.ID})
	}
	ans := s.chat(t, map[string]any{"messages": history, "tools": getWeather})
	if ans.Content == nil || *ans.Content != "Oslo rainy, Rome sunny" {
		t.Fatalf("final answer %+v", ans)
	}
	reqs := s.fake.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d model requests for a two-step loop", len(reqs))
	}
	samePrefix(t, reqs)
	outs := reqs[2].ItemsOfType("function_call_output")
	if len(outs) != 2 || outs[0]["output"] != "result call_a" || outs[1]["output"] != "result call_b" {
		t.Fatalf("outputs the model saw: %v", outs)
	}
}

// Parallel calls come back in the order the model emitted them, every
// time.
func TestParallelCallsKeepTheModelsOrder(t *testing.T) {
	s := newStack(t, 0, 1)
	s.fake.SetHandler(func(r fakemodel.Request) fakemodel.Reply {
		n := r.LastUserText()
		return fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{
			{Name: "get_weather", CallID: "call_first_" + n, Arguments: `{"city":"Paris"}`},
			{Name: "get_weather", CallID: "call_second_" + n, Arguments: `{"city":"Rome"}`},
		}}
	})
	for i := range 50 {
		n := fmt.Sprint(i)
		ans := s.chat(t, map[string]any{"messages": []any{user(n)}, "tools": getWeather})
		if len(ans.ToolCalls) != 2 || ans.ToolCalls[0].ID != "call_first_"+n || ans.ToolCalls[1].ID != "call_second_"+n {
			t.Fatalf("run %d: calls %+v", i, ans.ToolCalls)
		}
	}
}

// parallel_tool_calls false returns exactly one call; the model's other
// call of that step is answered as not run when the turn goes on.
func TestParallelToolCallsFalseReturnsOne(t *testing.T) {
	s := newStack(t, 0, 1)
	s.fake.Enqueue(
		fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{
			{Name: "get_weather", CallID: "call_1", Arguments: `{"city":"Paris"}`},
			{Name: "get_weather", CallID: "call_2", Arguments: `{"city":"Rome"}`},
		}},
		fakemodel.Reply{Text: "done"},
	)
	msgs := []any{user("weather")}
	ans := s.chat(t, map[string]any{"messages": msgs, "tools": getWeather, "parallel_tool_calls": false})
	if len(ans.ToolCalls) != 1 || ans.ToolCalls[0].ID != "call_1" {
		t.Fatalf("calls %+v, want only call_1", ans.ToolCalls)
	}
	tc := ans.ToolCalls[0]
	msgs = append(msgs,
		map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"id": tc.ID, "type": "function", "function": map[string]any{"name": tc.Function.Name, "arguments": tc.Function.Arguments}}}},
		map[string]any{"role": "tool", "tool_call_id": tc.ID, "content": "sunny"})
	ans = s.chat(t, map[string]any{"messages": msgs, "tools": getWeather, "parallel_tool_calls": false})
	if ans.Content == nil || *ans.Content != "done" {
		t.Fatalf("answer %+v", ans)
	}
	reqs := s.fake.Requests()
	outs := reqs[len(reqs)-1].ItemsOfType("function_call_output")
	if len(outs) != 2 || outs[0]["output"] != "sunny" || !strings.Contains(fmt.Sprint(outs[1]["output"]), "not run") {
		t.Fatalf("outputs %v", outs)
	}
}

// A conversation that moves to another worker of the group (the first
// one stopped) is answered from the request's own history.
func TestConversationMovesToAnotherWorker(t *testing.T) {
	s := newStack(t, 0, 1)
	s.fake.SetHandler(func(r fakemodel.Request) fakemodel.Reply {
		var texts []string
		for _, m := range r.Messages() {
			if m.Role == "user" {
				texts = append(texts, m.Text)
			}
		}
		return fakemodel.Reply{Text: "seen " + strings.Join(texts, "+")}
	})
	history := []any{user("a")}
	ans := s.chat(t, map[string]any{"messages": history})
	history = append(history, assistant(*ans.Content), user("b"))
	ans = s.chat(t, map[string]any{"messages": history})
	history = append(history, assistant(*ans.Content), user("c"))

	p2, err := codex.New(context.Background(), codex.Config{Command: s.cmd, Workdir: s.workdir, Env: []string{"CODEX_HOME=" + s.home}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.st.AddWorker(ctx, pathstack.WorkerConfig{Executor: &executor.Executor{Provider: p2, Catalog: catalog.Default()}, Release: p2.Close, Consumer: "second"}); err != nil {
		t.Fatal(err)
	}
	if err := s.st.Worker.Stop(); err != nil {
		t.Fatal(err)
	}
	ans = s.chat(t, map[string]any{"messages": history})
	if ans.Content == nil || *ans.Content != "seen a+b+c" {
		t.Fatalf("on the second worker: %+v", ans)
	}
	if n := p2.LiveThreads(); n != 1 {
		t.Fatalf("second worker keeps %d live threads", n)
	}
}

// When the backend refuses custom instructions, the request is retried
// once with Codex's own base prompt, and later requests use it directly;
// the switch is logged once.
func TestRefusedInstructionsFallBackToCodexPrompt(t *testing.T) {
	var logs syncBuffer
	s := newStackWith(t, options{cfg: func(c *codex.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }})
	s.fake.SetHandler(func(r fakemodel.Request) fakemodel.Reply {
		if msgs := r.Messages(); len(msgs) > 0 && msgs[0].Role == "developer" && msgs[0].Text == "Custom persona." {
			return fakemodel.Reply{Status: 400, ErrorMessage: "Instructions are not valid", ErrorType: "invalid_request_error"}
		}
		return fakemodel.Reply{Text: "fine"}
	})
	for i := range 2 {
		ans := s.chat(t, map[string]any{"messages": []any{map[string]any{"role": "system", "content": "Custom persona."}, user(fmt.Sprint("q", i))}})
		if ans.Content == nil || *ans.Content != "fine" {
			t.Fatalf("request %d: %+v", i, ans)
		}
	}
	reqs := s.fake.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d model requests, want the refused one, its retry and the second request", len(reqs))
	}
	for _, r := range reqs[1:] {
		msgs := r.Messages()
		if len(msgs) < 2 || msgs[0].Text == "Custom persona." || msgs[1].Role != "developer" || msgs[1].Text != "Custom persona." {
			t.Fatalf("retry does not carry Codex's base prompt then the caller's instructions: %v", msgs)
		}
	}
	if n := strings.Count(logs.String(), "refused custom instructions"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, logs.String())
	}
}

// Codex's catalog runs its newer models in code mode, where client tools
// would only be reachable from JavaScript; model mode keeps them plain
// functions with a per-thread catalog entry.
func TestCatalogModelOffersClientToolsAsFunctions(t *testing.T) {
	s := newStackWith(t, options{cfg: func(c *codex.Config) { c.Model = "gpt-6.2-sol" }})
	s.fake.SetReply(fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Name: "get_weather", CallID: "call_x", Arguments: `{"city":"Oslo"}`}}})
	ans := s.chat(t, map[string]any{"messages": []any{user("weather")}, "tools": getWeather})
	if len(ans.ToolCalls) != 1 || ans.ToolCalls[0].ID != "call_x" {
		t.Fatalf("calls %+v", ans.ToolCalls)
	}
	r := s.fake.Requests()[0]
	if names := r.ToolNames(); len(names) != 1 || names[0] != "get_weather" {
		t.Fatalf("tools %v", names)
	}
	if r.Header.Get("x-openai-internal-codex-responses-lite") != "" || len(r.ItemsOfType("additional_tools")) != 0 {
		t.Fatalf("code mode request: %s", r.Body)
	}
}

// The codex child inherits none of the worker's secrets.
func TestCodexEnvironmentHoldsNoSecret(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	for k, v := range map[string]string{
		"BUS_API_TOKEN": "tok-secret-1", "BUS_AUTH_HS256_SECRET": "hs-secret-2", "BUS_EVENTS_POSTGRES_DSN": "postgres://u:pw-secret-3@h/db",
		"BUS_EVENTS_REDIS_PASSWORD": "redis-secret-4", "BUS_API_JWT_SECRET": "jwt-secret-5",
	} {
		t.Setenv(k, v)
	}
	s := newStack(t, 0, 1)
	procs := s.provider.Pool().Processes()
	if len(procs) == 0 {
		t.Fatal("no codex process")
	}
	members := testproc.GroupMembers(procs[0].PID())
	if len(members) == 0 {
		t.Fatal("no process in the codex group")
	}
	for _, pid := range members {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue // exited meanwhile
		}
		for _, secret := range []string{"secret-1", "secret-2", "secret-3", "secret-4", "secret-5", "BUS_"} {
			if bytes.Contains(env, []byte(secret)) {
				t.Fatalf("pid %d environment holds %q", pid, secret)
			}
		}
		if !bytes.Contains(env, []byte("CODEX_HOME=")) {
			t.Fatalf("pid %d lacks CODEX_HOME", pid)
		}
	}
}

// A command an agent-mode turn left running does not outlive its request.
func TestAgentCommandDoesNotOutliveItsRequest(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	s := newStackWith(t, options{cfg: func(c *codex.Config) { c.Approvals = codex.ApprovalsApprove }})
	s.fake.Enqueue(fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Name: "exec_command", Arguments: `{"cmd":"sleep 313","yield_time_ms":300}`}}})
	var runningDuringTurn atomic.Bool
	s.fake.SetHandler(func(fakemodel.Request) fakemodel.Reply {
		runningDuringTurn.Store(sleepRunning()) // the model sees the command still running
		return fakemodel.Reply{Text: "started"}
	})
	s.chat(t, map[string]any{"model": catalog.AgentModelID, "messages": []any{user("start a long command")}})
	if !runningDuringTurn.Load() {
		t.Fatal("the command was not running while the turn went on")
	}
	deadline := time.Now().Add(30 * time.Second)
	for sleepRunning() {
		if time.Now().After(deadline) {
			t.Fatal("sleep 313 still runs after its request was answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sleepRunning reports whether a process runs "sleep 313" (directly or
// as a shell's command line).
func sleepRunning() bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) > 0 && bytes.Equal(args[len(args)-1], []byte("sleep 313")) ||
			len(args) == 2 && bytes.Equal(args[0], []byte("sleep")) && bytes.Equal(args[1], []byte("313")) {
			return true
		}
	}
	return false
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Hosted web search: the request turns Codex's own web search on for that
// thread only, and the searches and the answer's citations come back.
func TestWebSearchRunsAsCodexWebSearch(t *testing.T) {
	s := newStack(t, 0, 1)
	const text = "Helsinki is 5C today, says Example."
	s.fake.SetReply(fakemodel.Reply{
		WebSearches: []fakemodel.WebSearch{{Query: "weather Helsinki"}, {URL: "https://example.com/weather"}},
		Text:        text,
		Annotations: []fakemodel.Citation{{Start: 27, End: 34, URL: "https://example.com/weather", Title: "Example Weather"}},
	})
	var deltas []turn.Delta
	res, err := s.provider.Run(testCtx(t), &turn.Request{
		Model: "codex-chatgpt", Input: []turn.Item{{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: "weather in Helsinki?"}}}},
		ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceAuto}, ParallelToolCalls: true,
		WebSearch: &turn.WebSearch{ContextSize: "high", AllowedDomains: []string{"example.com"}},
	}, func(d turn.Delta) { deltas = append(deltas, d) })
	if err != nil {
		t.Fatal(err)
	}
	ws := s.fake.Requests()[0].ToolOfType("web_search")
	if ws == nil || ws["external_web_access"] != true || ws["search_context_size"] != "high" {
		t.Fatalf("web search tool offered: %v (request %s)", ws, s.fake.Requests()[0].Body)
	}
	if res.Text != text || len(res.WebSearches) != 2 {
		t.Fatalf("result %+v", res)
	}
	var a0, a1 struct {
		Type  string `json:"type"`
		Query string `json:"query"`
		URL   string `json:"url"`
	}
	_ = json.Unmarshal(res.WebSearches[0].Action, &a0)
	_ = json.Unmarshal(res.WebSearches[1].Action, &a1)
	if a0.Type != "search" || a0.Query != "weather Helsinki" || a1.Type != "open_page" || a1.URL != "https://example.com/weather" {
		t.Fatalf("actions %s %s", res.WebSearches[0].Action, res.WebSearches[1].Action)
	}
	if len(res.Annotations) != 1 || !bytes.Contains(res.Annotations[0], []byte(`"url_citation"`)) || !bytes.Contains(res.Annotations[0], []byte(`"end_index":34`)) {
		t.Fatalf("annotations %s", res.Annotations)
	}
	var kinds []string
	for _, d := range deltas {
		switch {
		case d.Kind == turn.DeltaWebSearch && d.Done:
			kinds = append(kinds, "search done "+d.WebSearch.ID)
		case d.Kind == turn.DeltaWebSearch:
			kinds = append(kinds, "search "+d.WebSearch.ID)
		case d.Kind == turn.DeltaText && len(kinds) > 0 && kinds[len(kinds)-1] != "text":
			kinds = append(kinds, "text")
		}
	}
	want := []string{"search " + res.WebSearches[0].ID, "search done " + res.WebSearches[0].ID, "search " + res.WebSearches[1].ID, "search done " + res.WebSearches[1].ID, "text"}
	if strings.Join(kinds, ",") != strings.Join(want, ",") {
		t.Fatalf("delta order %q, want %q", kinds, want)
	}
	// Without web search in the request the next thread has none.
	if _, err := s.provider.Run(testCtx(t), &turn.Request{Model: "codex-chatgpt", Input: []turn.Item{{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: "hi"}}}}}, nil); err != nil {
		t.Fatal(err)
	}
	if s.fake.Requests()[1].ToolOfType("web_search") != nil {
		t.Fatal("web search offered to a request that did not ask for it")
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func userItem(text string) turn.Item {
	return turn.Item{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: text}}}
}

// Namespaced tools are offered as one namespace and their calls come back
// with the namespace; a custom (free-form) tool is offered as a function
// with one string argument and comes back as a custom call with its input.
func TestNamespacedAndCustomTools(t *testing.T) {
	s := newStack(t, 0, 1)
	schema := json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`)
	req := &turn.Request{
		Model: "codex-chatgpt", ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceAuto}, ParallelToolCalls: true,
		Input: []turn.Item{userItem("go")},
		Tools: []turn.Tool{
			{Namespace: "weather", NamespaceDescription: "Weather tools.", Name: "get", Description: "Current weather", Parameters: schema},
			{Namespace: "weather", NamespaceDescription: "Weather tools.", Name: "forecast", Description: "Forecast", Parameters: schema},
			{Kind: turn.ToolCustom, Name: "apply_patch", Description: "Apply a patch", Format: json.RawMessage(`{"type":"grammar","syntax":"lark","definition":"start: \"*** Begin Patch\""}`)},
		},
	}
	s.fake.Enqueue(fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{
		{Namespace: "weather", Name: "get", CallID: "call_ns", Arguments: `{"city":"Oslo"}`},
		{Name: "client_apply_patch", CallID: "call_custom", Arguments: `{"input":"*** Begin Patch"}`},
	}}, fakemodel.Reply{Text: "patched"})
	res, err := s.provider.Run(testCtx(t), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ToolCalls) != 2 {
		t.Fatalf("calls %+v", res.ToolCalls)
	}
	if c := res.ToolCalls[0]; c.ID != "call_ns" || c.Namespace != "weather" || c.Name != "get" || c.Custom || c.Arguments != `{"city":"Oslo"}` {
		t.Fatalf("namespaced call %+v", c)
	}
	if c := res.ToolCalls[1]; c.ID != "call_custom" || c.Namespace != "" || c.Name != "apply_patch" || !c.Custom || c.Arguments != "*** Begin Patch" {
		t.Fatalf("custom call %+v", c)
	}
	r0 := s.fake.Requests()[0]
	ns := r0.ToolOfType("namespace")
	if ns == nil || ns["name"] != "weather" || len(ns["tools"].([]any)) != 2 {
		t.Fatalf("namespace tool %v", ns)
	}
	if custom := r0.Tool("client_apply_patch"); custom == nil || !strings.Contains(fmt.Sprint(custom["description"]), "lark grammar") {
		t.Fatalf("custom tool offered as %v", custom)
	}
	// The client answers both; the turn goes on with the outputs.
	req.Input = append(req.Input,
		turn.Item{Type: turn.ItemFunctionCall, CallID: "call_ns", Namespace: "weather", Name: "get", Arguments: `{"city":"Oslo"}`},
		turn.Item{Type: turn.ItemCustomToolCall, CallID: "call_custom", Name: "apply_patch", Input: "*** Begin Patch"},
		turn.Item{Type: turn.ItemFunctionCallOutput, CallID: "call_ns", Output: "rainy"},
		turn.Item{Type: turn.ItemCustomToolCallOutput, CallID: "call_custom", Output: "applied"},
	)
	res, err = s.provider.Run(testCtx(t), req, nil)
	if err != nil || res.Text != "patched" {
		t.Fatalf("after the outputs: %+v, %v", res, err)
	}
	reqs := s.fake.Requests()
	samePrefix(t, reqs)
	outs := reqs[1].ItemsOfType("function_call_output")
	if len(outs) != 2 || outs[0]["output"] != "rainy" || outs[1]["output"] != "applied" {
		t.Fatalf("outputs %v", outs)
	}
}

// The login's rate-limit state follows what Codex reports; a usage limit
// is a 429 with the reset time, and until then requests are refused at
// once without a model call.
func TestUsageLimitExhaustsTheLoginUntilItsReset(t *testing.T) {
	s := newStack(t, 0, 1)
	reset := time.Now().Add(90 * time.Second).Unix()
	s.fake.Enqueue(
		fakemodel.Reply{Text: "fine", Headers: map[string]string{
			"x-codex-primary-used-percent": "40", "x-codex-primary-window-minutes": "300", "x-codex-primary-reset-at": fmt.Sprint(reset + 3600),
		}},
		fakemodel.Reply{Status: 429, ErrorType: "usage_limit_reached", ErrorMessage: "The usage limit has been reached",
			ErrorFields: map[string]any{"resets_at": reset, "plan_type": "plus"},
			Headers:     map[string]string{"x-codex-primary-used-percent": "100", "x-codex-primary-window-minutes": "300", "x-codex-primary-reset-at": fmt.Sprint(reset)}},
	)
	req := func(text string) *turn.Request {
		return &turn.Request{Model: "codex-chatgpt", Input: []turn.Item{userItem(text)}}
	}
	if _, err := s.provider.Run(testCtx(t), req("one"), nil); err != nil {
		t.Fatal(err)
	}
	rl, ok := s.provider.RateLimits()
	if !ok || rl.Primary == nil || rl.Primary.UsedPercent != 40 {
		t.Fatalf("rate limits after a response: %+v", rl)
	}
	_, err := s.provider.Run(testCtx(t), req("two"), nil)
	apiErr, isAPI := err.(*llmapi.APIError)
	if !isAPI || apiErr.Status != 429 || apiErr.Code != "insufficient_quota" || apiErr.RetryAfter <= 0 || apiErr.RetryAfter > 91*time.Second {
		t.Fatalf("usage limit: %#v", err)
	}
	until, exhausted := s.provider.Exhausted()
	if !exhausted || until.Unix() != reset {
		t.Fatalf("exhausted %v until %v, want until %d", exhausted, until, reset)
	}
	n := len(s.fake.Requests())
	if _, err := s.provider.Run(testCtx(t), req("three"), nil); err == nil || err.(*llmapi.APIError).Status != 429 {
		t.Fatalf("while exhausted: %v", err)
	}
	if len(s.fake.Requests()) != n {
		t.Fatal("a model request was made while the login is exhausted")
	}
}

// With approvals on, a command still runs inside the sandbox: a request
// to escalate out of it is refused, not approved.
func TestApprovedCommandsCannotEscalate(t *testing.T) {
	s := newStackWith(t, options{cfg: func(c *codex.Config) { c.Approvals = codex.ApprovalsApprove }})
	marker := filepath.Join(t.TempDir(), "escaped")
	s.fake.Enqueue(fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Name: "exec_command",
		Arguments: fmt.Sprintf(`{"cmd":"touch %s","sandbox_permissions":"require_escalated","justification":"needed"}`, marker)}}})
	s.fake.SetReply(fakemodel.Reply{Text: "tried"})
	s.chat(t, map[string]any{"model": catalog.AgentModelID, "messages": []any{user("write outside")}})
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an escalated command ran outside the sandbox: %v", err)
	}
	outs := s.fake.Requests()[len(s.fake.Requests())-1].ItemsOfType("function_call_output")
	if len(outs) == 0 {
		t.Fatal("no tool output went back to the model")
	}
}
