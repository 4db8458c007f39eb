package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
)

// The requests of the modes section.
const (
	modesSystem  = "You are a helpful assistant."
	modesPlain   = "Reply ONE"
	modesWeather = "What is the weather in Paris?"
	modesAnswer  = "It is sunny in Paris."
)

// benchMode is one execution mode of the codex provider and the catalog
// id that selects it.
type benchMode struct{ name, modelID string }

// benchModes are the two modes, model (the default) first.
func benchModes() []benchMode {
	return []benchMode{{catalog.ModeModel, catalog.DefaultModelID}, {catalog.ModeAgent, catalog.AgentModelID}}
}

// clientFunctions are four chat-completions function tools, as a client
// sends them; the first is the one the tool loop calls.
func clientFunctions() []map[string]any {
	fn := func(name, desc string, props map[string]any, required ...string) map[string]any {
		return map[string]any{"type": "function", "function": map[string]any{
			"name": name, "description": desc,
			"parameters": map[string]any{"type": "object", "properties": props, "required": required},
		}}
	}
	str := func(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }
	return []map[string]any{
		fn("get_weather", "Get the current weather in a city.", map[string]any{
			"city": str("City name, e.g. Paris"),
			"unit": map[string]any{"type": "string", "enum": []string{"celsius", "fahrenheit"}},
		}, "city"),
		fn("get_time", "Get the current local time in a time zone.", map[string]any{"timezone": str("IANA time zone, e.g. Europe/Paris")}, "timezone"),
		fn("search_docs", "Search the product documentation.", map[string]any{
			"query": str("Search terms"), "limit": map[string]any{"type": "integer", "minimum": 1, "maximum": 20},
		}, "query"),
		fn("send_email", "Send an email on the user's behalf.", map[string]any{
			"to": str("Recipient address"), "subject": str("Subject line"), "body": str("Plain-text body"),
		}, "to", "subject", "body"),
	}
}

// schemaBytes is the size of a function as the client sent it (compact
// JSON, as encoding/json writes it).
func schemaBytes(fn map[string]any) int {
	b, _ := json.Marshal(fn)
	return len(b)
}

// modesReply is the fake model of the modes section: the weather question
// with the client's get_weather offered calls it, the outputs of a call get
// the answer, anything else gets a short text.
func modesReply(r fakemodel.Request) fakemodel.Reply {
	switch {
	case len(r.ItemsOfType("function_call_output")) > 0:
		return fakemodel.Reply{Text: modesAnswer}
	case r.LastUserText() == modesWeather && r.Tool("get_weather") != nil:
		return fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}
	case r.LastUserText() == modesPlain:
		return fakemodel.Reply{Text: "ONE"}
	}
	return fakemodel.Reply{Text: "Answer to: " + r.LastUserText()}
}

// ModesReport is the codex modes section: what the model receives, tool
// steps against plain answers, and Codex's CPU per request, in model mode
// (the default) and agent mode (Codex as a coding agent, the behaviour of
// every request before model mode existed), through the whole bus path.
type ModesReport struct {
	Skipped string `json:"skipped,omitempty"`
	// Processes is the App Server pool size.
	Processes int `json:"processes"`
	// Iterations is the plain requests and tool loops per mode and run;
	// Conversations the 4-turn conversations per mode and run.
	Iterations    int `json:"iterations_per_run"`
	Conversations int `json:"conversations_per_run"`
	// SchemaBytes is each client function's own size as the client sent
	// it (compact JSON of its chat-completions tool object).
	SchemaBytes []int          `json:"function_schema_bytes"`
	Received    []ReceivedMode `json:"received"`
	Timing      []ModeTiming   `json:"timing"`
	// DirectP50 and DirectCPU are the model-mode plain request's thread
	// and turn run directly on the App Server (section 3's direct path:
	// the same model request, without the bus and the provider), one at a
	// time, in each run: latency p50 (ms) and the App Server's CPU per
	// request (ms). What Codex itself costs for the request.
	DirectP50 Summary `json:"direct_plain_p50_ms"`
	DirectCPU Summary `json:"direct_codex_cpu_ms"`
}

// RequestSize is one model request as the fake model recorded it.
type RequestSize struct {
	// Bytes is the whole request body; Tokens ≈ Bytes / 4.
	Bytes  int `json:"bytes"`
	Tokens int `json:"approx_tokens"`
	// InputItems and InputBytes are the "input" array; Tools and
	// ToolsBytes the "tools" array (JSON bytes of each array).
	InputItems int `json:"input_items"`
	InputBytes int `json:"input_bytes"`
	Tools      int `json:"tools"`
	ToolsBytes int `json:"tools_bytes"`
	// PromptCacheKey is the request's prompt_cache_key.
	PromptCacheKey string `json:"prompt_cache_key"`
}

// approxTokens is the rule this report uses for tokens: 4 bytes of JSON
// per token (OpenAI's rule of thumb for English text).
func approxTokens(bytes int) int { return (bytes + 2) / 4 }

// ReceivedMode is what the model receives in one mode.
type ReceivedMode struct {
	Mode    string `json:"mode"`
	ModelID string `json:"model_id"`
	// Plain is a chat completion with a system message and "Reply ONE".
	Plain RequestSize `json:"plain"`
	// OneFunction and FourFunctions are the same with one and with four
	// client functions.
	OneFunction   RequestSize `json:"one_function"`
	FourFunctions RequestSize `json:"four_functions"`
	// OneFunctionExtra is OneFunction − Plain − the function's own size;
	// FourFunctionsExtra is (FourFunctions − Plain − the four functions'
	// own sizes) / 4: what a client function costs beyond its schema.
	OneFunctionExtra   int `json:"one_function_extra_bytes"`
	FourFunctionsExtra int `json:"four_functions_extra_bytes_per_function"`
	// CodexTools are the tools offered in the plain request (the client
	// sent none).
	CodexTools []string `json:"codex_tools"`
	// Conversation is the four requests of a 4-turn chat (system message,
	// then each request the whole history plus a new user message).
	Conversation []RequestSize `json:"conversation"`
	// ConversationKeys counts the distinct prompt_cache_keys of those four.
	ConversationKeys int `json:"conversation_cache_keys"`
	// ConversationPrefix says each of the four repeated the one before it
	// byte for byte and added to it.
	ConversationPrefix bool `json:"conversation_exact_prefix"`
}

// ModeTiming is the latency and the App Server's CPU of one mode.
type ModeTiming struct {
	Mode string `json:"mode"`
	// PlainP50 and PlainP95: "Reply ONE" with a system message (ms).
	PlainP50 Summary `json:"plain_p50_ms"`
	PlainP95 Summary `json:"plain_p95_ms"`
	// ToolStepP50 and ToolStepP95: the weather question with get_weather,
	// answered by one call (the step returns with finish_reason
	// tool_calls) (ms).
	ToolStepP50 Summary `json:"tool_step_p50_ms"`
	ToolStepP95 Summary `json:"tool_step_p95_ms"`
	// ToolAddedP50 is each run's tool step p50 − plain p50 (ms).
	ToolAddedP50 Summary `json:"tool_step_added_p50_ms"`
	// ToolNextP50 is the request that carries the call's output, which
	// the held turn answers (ms).
	ToolNextP50 Summary `json:"tool_output_p50_ms"`
	// ConversationP50 is a turn of the 4-turn chats (ms).
	ConversationP50 Summary `json:"conversation_p50_ms"`
	// CPUPlain, CPUTool and CPUConversation are the App Server
	// processes' CPU time per request of each phase (ms).
	CPUPlain        Summary `json:"codex_cpu_plain_ms"`
	CPUTool         Summary `json:"codex_cpu_tool_loop_ms"`
	CPUConversation Summary `json:"codex_cpu_conversation_ms"`
	Errors          int     `json:"errors"`
}

// modesBench runs the section's requests on one stack.
type modesBench struct {
	b      *bencher
	e      *codexEnv
	prov   *codex.Provider
	st     *stack.Stack
	client *http.Client
	seq    int // conversations started
}

func (b *bencher) modesSection(ctx context.Context, e *codexEnv) (*ModesReport, error) {
	const processes = 1
	rep := &ModesReport{Processes: processes, Iterations: b.opts.modeIterations, Conversations: b.opts.modeConversations}
	for _, fn := range clientFunctions() {
		rep.SchemaBytes = append(rep.SchemaBytes, schemaBytes(fn))
	}
	prov, err := b.newProvider(ctx, e, processes)
	if err != nil {
		return nil, err
	}
	defer func() { _ = prov.Close() }()
	st, err := startStack(ctx, stackConfig{provider: prov, catalog: catalog.Default(), concurrency: 8, timeout: codexRequestTimeout, log: b.quiet})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	e.fake.SetHandler(modesReply)
	defer e.fake.SetReply(fakemodel.Reply{Text: fakemodel.DefaultText})
	m := &modesBench{b: b, e: e, prov: prov, st: st, client: newHTTPClient(4)}
	defer m.client.CloseIdleConnections()

	for _, mode := range benchModes() {
		for range b.opts.codexWarmup {
			if _, _, err := m.chat(ctx, m.plainBody(mode, nil)); err != nil {
				return nil, fmt.Errorf("%s mode warm-up: %w", mode.name, err)
			}
		}
		r, err := m.received(ctx, mode)
		if err != nil {
			return nil, fmt.Errorf("%s mode: %w", mode.name, err)
		}
		rep.Received = append(rep.Received, *r)
	}

	type acc struct {
		plain50, plain95, tool50, tool95, added, next50, conv50, cpuPlain, cpuTool, cpuConv []float64
		errs                                                                                int
	}
	accs := map[string]*acc{}
	var (
		firstErr            error
		direct50, directCPU []float64
	)
	tp := directThread(e)
	tp.BaseInstructions = modesSystem
	for run := range b.opts.runs {
		modes := benchModes()
		if run%2 == 1 {
			slices.Reverse(modes) // neither mode always runs first
		}
		for _, mode := range modes {
			a := accs[mode.name]
			if a == nil {
				a = &acc{}
				accs[mode.name] = a
			}
			e.fake.ResetRequests()
			plain, cpuPlain, errs, err := m.phase(ctx, b.opts.modeIterations, func(ctx context.Context) ([]time.Duration, error) {
				_, d, err := m.chat(ctx, m.plainBody(mode, nil))
				return []time.Duration{d}, err
			})
			a.errs += errs
			firstErr = cmpErr(firstErr, err)
			var steps, nexts []time.Duration
			_, cpuTool, errs, err := m.phase(ctx, b.opts.modeIterations, func(ctx context.Context) ([]time.Duration, error) {
				step, next, err := m.toolLoop(ctx, mode)
				if err != nil {
					return nil, err
				}
				steps, nexts = append(steps, step), append(nexts, next)
				return []time.Duration{step, next}, nil
			})
			a.errs += errs
			firstErr = cmpErr(firstErr, err)
			conv, cpuConv, errs, err := m.phase(ctx, b.opts.modeConversations, func(ctx context.Context) ([]time.Duration, error) {
				return m.conversation(ctx, mode)
			})
			a.errs += errs
			firstErr = cmpErr(firstErr, err)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if len(plain) == 0 || len(steps) == 0 || len(conv) == 0 {
				return nil, fmt.Errorf("%s mode, run %d: every request of a phase failed: %w", mode.name, run+1, firstErr)
			}
			slices.Sort(steps)
			slices.Sort(nexts)
			a.plain50, a.plain95 = append(a.plain50, ms(percentile(plain, 50))), append(a.plain95, ms(percentile(plain, 95)))
			a.tool50, a.tool95 = append(a.tool50, ms(percentile(steps, 50))), append(a.tool95, ms(percentile(steps, 95)))
			a.added = append(a.added, ms(percentile(steps, 50)-percentile(plain, 50)))
			a.next50 = append(a.next50, ms(percentile(nexts, 50)))
			a.conv50 = append(a.conv50, ms(percentile(conv, 50)))
			a.cpuPlain = append(a.cpuPlain, cpuPlain)
			a.cpuTool = append(a.cpuTool, cpuTool)
			a.cpuConv = append(a.cpuConv, cpuConv)
			if mode.name == catalog.ModeModel {
				lats, cpu, errs, err := m.phase(ctx, b.opts.modeIterations, func(ctx context.Context) ([]time.Duration, error) {
					start := time.Now()
					err := directTurn(ctx, prov.Pool(), tp, modesPlain)
					return []time.Duration{time.Since(start)}, err
				})
				a.errs += errs
				firstErr = cmpErr(firstErr, err)
				if len(lats) > 0 {
					direct50, directCPU = append(direct50, ms(percentile(lats, 50))), append(directCPU, cpu)
				}
			}
			b.log.Info("codex modes run", "mode", mode.name, "run", run+1,
				"plain_p50_ms", ms(percentile(plain, 50)), "tool_step_p50_ms", ms(percentile(steps, 50)),
				"cpu_plain_ms", cpuPlain, "cpu_tool_ms", cpuTool, "cpu_conversation_ms", cpuConv)
		}
	}
	if firstErr != nil {
		b.note(fmt.Sprintf("codex modes: failed requests, first: %v", firstErr))
	}
	rep.DirectP50, rep.DirectCPU = summarize(direct50), summarize(directCPU)
	for _, mode := range benchModes() {
		a := accs[mode.name]
		rep.Timing = append(rep.Timing, ModeTiming{
			Mode: mode.name, PlainP50: summarize(a.plain50), PlainP95: summarize(a.plain95),
			ToolStepP50: summarize(a.tool50), ToolStepP95: summarize(a.tool95), ToolAddedP50: summarize(a.added),
			ToolNextP50: summarize(a.next50), ConversationP50: summarize(a.conv50),
			CPUPlain: summarize(a.cpuPlain), CPUTool: summarize(a.cpuTool), CPUConversation: summarize(a.cpuConv),
			Errors: a.errs,
		})
	}
	return rep, nil
}

// phase runs op n times one after the other and returns the latencies of
// its requests (sorted) and the App Server's CPU per request (ms).
func (m *modesBench) phase(ctx context.Context, n int, op func(context.Context) ([]time.Duration, error)) ([]time.Duration, float64, int, error) {
	var (
		lats     []time.Duration
		errs     int
		firstErr error
	)
	cpu0 := m.codexCPU()
	for range n {
		rctx, cancel := context.WithTimeout(ctx, codexRequestTimeout)
		ds, err := op(rctx)
		cancel()
		if ctx.Err() != nil {
			return nil, 0, errs, ctx.Err()
		}
		if err != nil {
			errs++
			firstErr = cmpErr(firstErr, err)
			continue
		}
		lats = append(lats, ds...)
	}
	cpu := m.codexCPU() - cpu0
	slices.Sort(lats)
	perRequest := 0.0
	if len(lats) > 0 {
		perRequest = ms(cpu) / float64(len(lats))
	}
	return lats, perRequest, errs, firstErr
}

// codexCPU is the CPU time the pool's App Server processes have used.
func (m *modesBench) codexCPU() time.Duration {
	var pids []int
	for _, p := range m.prov.Pool().Processes() {
		pids = append(pids, groupMembers(p.PID())...)
	}
	return cpuOf(pids)
}

func (m *modesBench) chat(ctx context.Context, body map[string]any) (chatMessage, time.Duration, error) {
	return chat(ctx, m.client, m.st, body)
}

// plainBody is a chat completion with the system message and "Reply
// ONE", offering tools when given.
func (m *modesBench) plainBody(mode benchMode, tools []map[string]any) map[string]any {
	body := map[string]any{"model": mode.modelID, "messages": []any{
		map[string]any{"role": "system", "content": modesSystem},
		map[string]any{"role": "user", "content": modesPlain},
	}}
	if len(tools) > 0 {
		body["tools"] = tools
	}
	return body
}

// toolLoop is one client tool loop: the weather question comes back as a
// get_weather call (timed: step), and the call's output gets the answer
// (timed: next).
func (m *modesBench) toolLoop(ctx context.Context, mode benchMode) (step, next time.Duration, err error) {
	tools := clientFunctions()[:1]
	messages := []any{map[string]any{"role": "system", "content": modesSystem}, map[string]any{"role": "user", "content": modesWeather}}
	ans, step, err := m.chat(ctx, map[string]any{"model": mode.modelID, "messages": messages, "tools": tools})
	if err != nil {
		return 0, 0, err
	}
	if len(ans.ToolCalls) != 1 || ans.ToolCalls[0].Function.Name != "get_weather" {
		return 0, 0, fmt.Errorf("tool step: want one get_weather call, got %+v", ans)
	}
	tc := ans.ToolCalls[0]
	messages = append(messages,
		map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{
			"id": tc.ID, "type": "function", "function": map[string]any{"name": tc.Function.Name, "arguments": tc.Function.Arguments}}}},
		map[string]any{"role": "tool", "tool_call_id": tc.ID, "content": `{"sky":"sunny","celsius":21}`})
	ans, next, err = m.chat(ctx, map[string]any{"model": mode.modelID, "messages": messages, "tools": tools})
	if err != nil {
		return 0, 0, err
	}
	if ans.Content == nil || *ans.Content != modesAnswer {
		return 0, 0, fmt.Errorf("tool output: want %q, got %+v", modesAnswer, ans)
	}
	return step, next, nil
}

// conversation runs a 4-turn chat of its own (its questions are numbered)
// and returns each turn's latency.
func (m *modesBench) conversation(ctx context.Context, mode benchMode) ([]time.Duration, error) {
	m.seq++
	seq := m.seq
	messages := []any{map[string]any{"role": "system", "content": modesSystem}}
	var lats []time.Duration
	for turn := 1; turn <= 4; turn++ {
		q := fmt.Sprintf("Question %d of conversation %d: what is %d + %d?", turn, seq, turn, seq)
		messages = append(messages, map[string]any{"role": "user", "content": q})
		ans, d, err := m.chat(ctx, map[string]any{"model": mode.modelID, "messages": messages})
		if err != nil {
			return nil, fmt.Errorf("turn %d: %w", turn, err)
		}
		if ans.Content == nil || *ans.Content != "Answer to: "+q {
			return nil, fmt.Errorf("turn %d: answer %+v", turn, ans)
		}
		lats = append(lats, d)
		messages = append(messages, map[string]any{"role": "assistant", "content": *ans.Content})
	}
	return lats, nil
}

// received measures what the model receives in mode: one request at a
// time, each read back from the fake model's log.
func (m *modesBench) received(ctx context.Context, mode benchMode) (*ReceivedMode, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*codexRequestTimeout)
	defer cancel()
	r := &ReceivedMode{Mode: mode.name, ModelID: mode.modelID}
	one := func(body map[string]any) (RequestSize, fakemodel.Request, error) {
		m.e.fake.ResetRequests()
		if _, _, err := m.chat(ctx, body); err != nil {
			return RequestSize{}, fakemodel.Request{}, err
		}
		reqs := m.e.fake.Requests()
		if len(reqs) != 1 {
			return RequestSize{}, fakemodel.Request{}, fmt.Errorf("%d model requests for one chat completion", len(reqs))
		}
		size, err := sizeOf(reqs[0])
		return size, reqs[0], err
	}
	fns := clientFunctions()
	var (
		plain fakemodel.Request
		err   error
	)
	if r.Plain, plain, err = one(m.plainBody(mode, nil)); err != nil {
		return nil, fmt.Errorf("plain: %w", err)
	}
	r.CodexTools = offeredTools(plain)
	if r.OneFunction, _, err = one(m.plainBody(mode, fns[:1])); err != nil {
		return nil, fmt.Errorf("one function: %w", err)
	}
	if r.FourFunctions, _, err = one(m.plainBody(mode, fns)); err != nil {
		return nil, fmt.Errorf("four functions: %w", err)
	}
	r.OneFunctionExtra = r.OneFunction.Bytes - r.Plain.Bytes - schemaBytes(fns[0])
	four := 0
	for _, fn := range fns {
		four += schemaBytes(fn)
	}
	r.FourFunctionsExtra = (r.FourFunctions.Bytes - r.Plain.Bytes - four) / len(fns)

	m.e.fake.ResetRequests()
	if _, err := m.conversation(ctx, mode); err != nil {
		return nil, fmt.Errorf("conversation: %w", err)
	}
	reqs := m.e.fake.Requests()
	if len(reqs) != 4 {
		return nil, fmt.Errorf("conversation: %d model requests for 4 turns", len(reqs))
	}
	keys := map[string]bool{}
	r.ConversationPrefix = true
	var prev []json.RawMessage
	for _, req := range reqs {
		size, err := sizeOf(req)
		if err != nil {
			return nil, fmt.Errorf("conversation: %w", err)
		}
		r.Conversation = append(r.Conversation, size)
		keys[size.PromptCacheKey] = true
		var in struct {
			Input []json.RawMessage `json:"input"`
		}
		_ = json.Unmarshal(req.Body, &in)
		if prev != nil && !extendsExactly(prev, in.Input) {
			r.ConversationPrefix = false
		}
		prev = in.Input
	}
	r.ConversationKeys = len(keys)
	return r, nil
}

// extendsExactly says next starts with every item of prev, byte for byte,
// and has more.
func extendsExactly(prev, next []json.RawMessage) bool {
	if len(next) <= len(prev) {
		return false
	}
	for i := range prev {
		if !bytes.Equal(prev[i], next[i]) {
			return false
		}
	}
	return true
}

// sizeOf measures a recorded model request.
func sizeOf(r fakemodel.Request) (RequestSize, error) {
	var body struct {
		Input          json.RawMessage `json:"input"`
		Tools          json.RawMessage `json:"tools"`
		PromptCacheKey string          `json:"prompt_cache_key"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		return RequestSize{}, fmt.Errorf("model request is not JSON: %w", err)
	}
	var input, tools []json.RawMessage
	_ = json.Unmarshal(body.Input, &input)
	_ = json.Unmarshal(body.Tools, &tools)
	return RequestSize{
		Bytes: len(r.Body), Tokens: approxTokens(len(r.Body)),
		InputItems: len(input), InputBytes: len(body.Input), Tools: len(tools), ToolsBytes: len(body.Tools),
		PromptCacheKey: body.PromptCacheKey,
	}, nil
}

// received returns the mode's ReceivedMode, or nil (also when the
// section did not run).
func (r *ModesReport) received(mode string) *ReceivedMode {
	if r == nil {
		return nil
	}
	for i := range r.Received {
		if r.Received[i].Mode == mode {
			return &r.Received[i]
		}
	}
	return nil
}

// timing returns the mode's ModeTiming, or nil (also when the section
// did not run).
func (r *ModesReport) timing(mode string) *ModeTiming {
	if r == nil {
		return nil
	}
	for i := range r.Timing {
		if r.Timing[i].Mode == mode {
			return &r.Timing[i]
		}
	}
	return nil
}

// offeredTools names the tools of a model request: a function by its
// name, a hosted tool (web_search, ...) by its type.
func offeredTools(r fakemodel.Request) []string {
	var body struct {
		Tools []struct {
			Type string `json:"type"`
			Name string `json:"name"`
		} `json:"tools"`
	}
	_ = json.Unmarshal(r.Body, &body)
	out := []string{}
	for _, t := range body.Tools {
		if t.Name != "" {
			out = append(out, t.Name)
		} else {
			out = append(out, t.Type)
		}
	}
	return out
}
