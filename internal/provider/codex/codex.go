// Package codex is the execution provider that runs each turn through a
// warm pool of Codex App Server processes (package appserver): one fresh
// ephemeral thread per request, the conversation injected as real items,
// deltas streamed as they arrive, usage taken from Codex's token counts, and
// failures mapped to OpenAI errors with a fitting status.
//
// It imports internal/turn, pkg/appserver and pkg/llmapi.
package codex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Approval modes.
const (
	// ApprovalsDeny declines every command, file change and permission
	// request (the default).
	ApprovalsDeny = "deny"
	// ApprovalsApprove accepts command and file-change requests, which
	// then run inside the configured sandbox; everything else is denied.
	ApprovalsApprove = "approve"
)

// Config configures the provider.
type Config struct {
	// Command is the codex executable ("codex" when empty).
	Command string
	// Workdir is the working directory of the App Server and its threads.
	Workdir string
	// Model is the Codex model; "" or "auto" lets Codex choose.
	Model string
	// Sandbox is the thread sandbox ("read-only" when empty).
	Sandbox string
	// Approvals is ApprovalsDeny (default) or ApprovalsApprove.
	Approvals string
	// Processes is the pool size (1 when 0).
	Processes int
	// Env is extra environment for codex (e.g. CODEX_HOME=...).
	Env []string
	// ToolSettle is how long, after the model's latest call of a client
	// tool, the provider waits for more calls of the same model step
	// before it ends the turn and returns them (DefaultToolSettle when 0;
	// no wait when the request disallows parallel tool calls).
	ToolSettle time.Duration
	// Logger receives logs.
	Logger *slog.Logger
}

// DefaultToolSettle is the default Config.ToolSettle.
const DefaultToolSettle = 500 * time.Millisecond

// Provider runs turns on Codex.
type Provider struct {
	cfg     Config
	pool    *appserver.Pool
	handler appserver.Handler
	log     *slog.Logger
}

// Errors of New, to check with errors.Is.
var (
	ErrNotInstalled = appserver.ErrNotInstalled
	ErrNotLoggedIn  = errors.New("codex is not logged in")
)

// New starts the pool (one process eagerly, so a missing binary or login is
// reported at once) and checks that Codex can reach its model.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Processes < 1 {
		cfg.Processes = 1
	}
	if cfg.ToolSettle <= 0 {
		cfg.ToolSettle = DefaultToolSettle
	}
	switch cfg.Sandbox {
	case "":
		cfg.Sandbox = appserver.SandboxReadOnly
	case appserver.SandboxReadOnly, appserver.SandboxWorkspaceWrite, appserver.SandboxDangerFullAccess:
	default:
		return nil, fmt.Errorf("unknown sandbox %q (read-only, workspace-write or danger-full-access)", cfg.Sandbox)
	}
	p := &Provider{cfg: cfg, log: cfg.Logger, handler: appserver.HandlerFunc(appserver.Deny)}
	switch cfg.Approvals {
	case "", ApprovalsDeny:
	case ApprovalsApprove:
		p.handler = appserver.HandlerFunc(approve)
	default:
		return nil, fmt.Errorf("unknown approvals mode %q (deny or approve)", cfg.Approvals)
	}
	// The pool's processes live as long as the provider, not as long as
	// the caller's start-up context.
	pool, err := appserver.NewPool(context.WithoutCancel(ctx), appserver.PoolConfig{
		Process: appserver.Config{Command: cfg.Command, Dir: cfg.Workdir, Env: cfg.Env, Logger: cfg.Logger, ClientName: "bus-integration-codex"},
		Size:    cfg.Processes,
		Eager:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("start codex app-server: %w", err)
	}
	p.pool = pool
	acct, err := pool.Account(ctx)
	if err != nil {
		_ = pool.Close()
		return nil, fmt.Errorf("codex app-server: read account: %w", err)
	}
	if !acct.Ready() {
		_ = pool.Close()
		return nil, ErrNotLoggedIn
	}
	return p, nil
}

func approve(ctx context.Context, req *appserver.ServerRequest) (any, error) {
	switch req.Method {
	case appserver.MethodCommandApproval, appserver.MethodFileChangeApproval:
		return map[string]any{"decision": "accept"}, nil
	}
	return appserver.Deny(ctx, req)
}

// Capabilities implements turn.Provider.
func (p *Provider) Capabilities() turn.Capabilities {
	return turn.Capabilities{Tools: true, Images: true, Schema: true}
}

// Close stops every App Server process.
func (p *Provider) Close() error { return p.pool.Close() }

// Pool exposes the process pool (for diagnostics and benchmarks).
func (p *Provider) Pool() *appserver.Pool { return p.pool }

// errToolStep ends a turn whose model step called client tools: the calls
// go back to the client, which runs them and continues the conversation.
var errToolStep = errors.New("model called client tools")

// Run implements turn.Provider.
func (p *Provider) Run(ctx context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
	names := newToolNames(req.Tools, req.Input)
	rr, err := p.runRequest(req, names)
	if err != nil {
		return nil, err
	}
	turnCtx, endTurn := context.WithCancelCause(ctx)
	defer endTurn(nil)
	t := &turnState{sink: sink, names: names, endTurn: endTurn}
	t.settle = p.cfg.ToolSettle
	if !req.ParallelToolCalls {
		t.settle = 0
	}
	defer t.stopTimer()
	rr.OnEvent = t.onEvent
	if len(rr.DynamicTools) > 0 {
		// Client tools are not run here: their calls are held unanswered
		// until the step is complete, then the turn is interrupted (Codex
		// still reports the step's exact usage) and the calls returned.
		rr.Handler = appserver.HandlerFunc(func(hctx context.Context, sr *appserver.ServerRequest) (any, error) {
			if sr.Method != appserver.MethodDynamicToolCall {
				return p.handler.HandleServerRequest(hctx, sr)
			}
			<-hctx.Done()
			return appserver.TextToolResult(false, "this function is run by the API client"), nil
		})
	}
	res, err := p.pool.Run(turnCtx, rr)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if calls := t.toolCalls(); errors.Is(context.Cause(turnCtx), errToolStep) && len(calls) > 0 {
		out := &turn.Result{ToolCalls: calls, Finish: turn.FinishToolCalls}
		if res != nil {
			out.Text, out.Usage = answerText(res), usageOf(res)
		}
		return out, nil
	}
	if err != nil {
		return nil, mapError(err)
	}
	if res.Status != appserver.StatusCompleted {
		if res.Error != nil {
			return nil, mapError(res.Error)
		}
		return nil, llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "turn_"+res.Status, "", "the Codex turn ended "+res.Status)
	}
	return &turn.Result{Text: answerText(res), Finish: turn.FinishStop, Usage: usageOf(res)}, nil
}

// turnState follows one turn's events: it streams text deltas, collects
// client tool calls in the model's order, and ends the turn once no
// further call of the step arrives within the settle time.
type turnState struct {
	sink    turn.Sink
	names   toolNames
	endTurn context.CancelCauseFunc
	settle  time.Duration

	lastItem string
	streamed bool

	mu    sync.Mutex
	calls []turn.ToolCall
	timer *time.Timer
}

func (t *turnState) onEvent(ev appserver.Event) {
	switch {
	case ev.Kind == appserver.EventAgentMessageDelta && ev.Delta != "":
		if t.sink == nil {
			return
		}
		if t.lastItem != "" && ev.ItemID != t.lastItem && t.streamed {
			t.sink(turn.Delta{Kind: turn.DeltaText, Text: messageSeparator})
		}
		t.lastItem, t.streamed = ev.ItemID, true
		t.sink(turn.Delta{Kind: turn.DeltaText, Text: ev.Delta})
	case ev.Kind == appserver.EventItemStarted && ev.Item != nil && ev.Item.Type == "dynamicToolCall":
		call, ok := toolCallOf(ev.Item.Raw, t.names)
		if !ok {
			return
		}
		t.mu.Lock()
		index := len(t.calls)
		t.calls = append(t.calls, call)
		if t.timer != nil {
			t.timer.Stop()
		}
		t.timer = time.AfterFunc(t.settle, func() { t.endTurn(errToolStep) })
		t.mu.Unlock()
		if t.sink != nil {
			t.sink(turn.Delta{Kind: turn.DeltaToolCall, Index: index, ToolCall: turn.ToolCall{ID: call.ID, Name: call.Name}})
			t.sink(turn.Delta{Kind: turn.DeltaToolCall, Index: index, ArgumentsDelta: call.Arguments})
		}
	}
}

func (t *turnState) toolCalls() []turn.ToolCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]turn.ToolCall(nil), t.calls...)
}

func (t *turnState) stopTimer() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer != nil {
		t.timer.Stop()
	}
}

// messageSeparator joins several agent messages of one turn.
const messageSeparator = "\n\n"

// answerText is every agent message of the turn, in order, joined the way
// the stream joined them.
func answerText(res *appserver.RunResult) string {
	var parts []string
	for _, it := range res.Items {
		if it.Type == "agentMessage" && it.Text != "" {
			parts = append(parts, it.Text)
		}
	}
	if len(parts) == 0 {
		return res.Text
	}
	return strings.Join(parts, messageSeparator)
}

func usageOf(res *appserver.RunResult) turn.Usage {
	if !res.HasUsage {
		return turn.Usage{}
	}
	// A fresh thread runs one turn, so its total is this request's usage.
	u := res.Usage.Total
	return turn.Usage{
		InputTokens: u.InputTokens, CachedTokens: u.CachedInputTokens,
		OutputTokens: u.OutputTokens, ReasoningTokens: u.ReasoningOutputTokens,
		TotalTokens: u.TotalTokens,
	}
}

// runRequest maps the neutral request onto one thread and turn.
func (p *Provider) runRequest(req *turn.Request, names toolNames) (appserver.RunRequest, error) {
	rr := appserver.RunRequest{
		Cwd:            p.cfg.Workdir,
		Sandbox:        p.cfg.Sandbox,
		ApprovalPolicy: appserver.ApprovalUntrusted,
		Model:          p.cfg.Model,
		Effort:         req.Effort,
		Handler:        p.handler,
		ServiceName:    "bus-integration-codex",
	}
	if req.EngineModel != "" {
		rr.Model = req.EngineModel
	}
	if rr.Model == "auto" {
		rr.Model = ""
	}
	instructions := append([]string(nil), req.Instructions...)
	if f := req.Format; f != nil {
		switch f.Type {
		case "json_object":
			instructions = append(instructions, jsonObjectInstruction)
		case "json_schema":
			rr.OutputSchema = f.Schema
		}
	}
	if len(req.Tools) > 0 && req.ToolChoice.Mode != turn.ToolChoiceNone {
		rr.DynamicTools = dynamicTools(req.Tools, names)
		if extra := toolInstructions(req, names); extra != "" {
			instructions = append(instructions, extra)
		}
	}
	rr.DeveloperInstructions = strings.Join(instructions, "\n\n")
	history, input, err := splitConversation(req.Input, names)
	if err != nil {
		return rr, err
	}
	rr.History, rr.Input = history, input
	return rr, nil
}

// jsonObjectInstruction honours response_format json_object, which has no
// schema to enforce.
const jsonObjectInstruction = "Respond with a single valid JSON object and nothing else: no prose, no Markdown code fences."

// splitConversation injects everything before the final user message as
// history items (each a real message, function call or output, in order)
// and sends the final user message as the turn input. A conversation that
// does not end with a user message (e.g. it ends with tool outputs) is
// injected whole and the turn starts with empty input.
func splitConversation(items []turn.Item, names toolNames) ([]any, []appserver.UserInput, error) {
	last := len(items) - 1
	var input []appserver.UserInput
	if last >= 0 && items[last].Type == turn.ItemMessage && items[last].Role == turn.RoleUser {
		for _, part := range items[last].Content {
			switch part.Type {
			case turn.PartImage:
				input = append(input, appserver.ImageInput(part.ImageURL))
			default:
				input = append(input, appserver.TextInput(part.Text))
			}
		}
		items = items[:last]
	}
	history := make([]any, 0, len(items))
	for _, it := range items {
		switch it.Type {
		case turn.ItemMessage:
			history = append(history, messageItem(it))
		case turn.ItemFunctionCall:
			history = append(history, appserver.FunctionCallItem(it.CallID, names.codex(it.Name), it.Arguments))
		case turn.ItemFunctionCallOutput:
			history = append(history, appserver.FunctionCallOutputItem(it.CallID, it.Output))
		default:
			return nil, nil, llmapi.InvalidRequest("", "unsupported_item", fmt.Sprintf("conversation item type %q is not supported", it.Type))
		}
	}
	return history, input, nil
}

// messageItem is a Responses API message item: user and developer text as
// input_text, images as input_image, assistant text as output_text.
func messageItem(it turn.Item) map[string]any {
	content := make([]any, 0, len(it.Content))
	for _, part := range it.Content {
		switch {
		case part.Type == turn.PartImage:
			content = append(content, map[string]any{"type": "input_image", "image_url": part.ImageURL})
		case it.Role == turn.RoleAssistant:
			content = append(content, map[string]any{"type": "output_text", "text": part.Text})
		default:
			content = append(content, map[string]any{"type": "input_text", "text": part.Text})
		}
	}
	return map[string]any{"type": "message", "role": string(it.Role), "content": content}
}

var urlRE = regexp.MustCompile(`https?://\S+`)

// redact removes URLs (which may name internal hosts) from upstream text.
func redact(s string) string { return strings.TrimSpace(urlRE.ReplaceAllString(s, "[url]")) }

// mapError turns a Codex failure into the OpenAI error the client sees.
func mapError(err error) error {
	var te *appserver.TurnError
	switch {
	case errors.Is(err, appserver.ErrNotInstalled):
		return llmapi.NewError(http.StatusServiceUnavailable, llmapi.TypeUnavailable, "codex_not_installed", "", "the codex command is not installed on this worker")
	case errors.Is(err, appserver.ErrProcessExited), errors.Is(err, appserver.ErrClosed):
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "codex_process_exited", "", "the Codex App Server process exited while running the request; retry it")
	case errors.Is(err, appserver.ErrTurnInterrupted):
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "turn_interrupted", "", "the Codex turn was interrupted")
	case !errors.As(err, &te):
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "codex_error", "", "Codex App Server error: "+redact(err.Error()))
	}
	status := te.HTTPStatus
	switch {
	case te.Kind == appserver.KindUnauthorized || status == http.StatusUnauthorized || status == http.StatusForbidden:
		return llmapi.NewError(http.StatusServiceUnavailable, llmapi.TypeUnavailable, "codex_unauthorized",
			"", "the model provider rejected this worker's Codex credentials; the operator must run `codex login`")
	case te.Kind == appserver.KindUsageLimitExceeded:
		return llmapi.NewError(http.StatusTooManyRequests, llmapi.TypeRateLimit, "insufficient_quota", "", "the Codex account's usage limit is exhausted")
	case te.Kind == appserver.KindRateLimitExceeded || status == http.StatusTooManyRequests:
		return llmapi.NewError(http.StatusTooManyRequests, llmapi.TypeRateLimit, "rate_limit_exceeded", "", "the model provider is rate limiting requests; retry later")
	case te.Kind == appserver.KindServerOverloaded:
		return llmapi.NewError(http.StatusServiceUnavailable, llmapi.TypeUnavailable, "server_overloaded", "", "the model provider is overloaded; retry later")
	case te.Kind == appserver.KindContextWindowExceeded:
		return llmapi.NewError(http.StatusBadRequest, llmapi.TypeInvalidRequest, "context_length_exceeded", "messages", "the conversation does not fit the model's context window")
	case te.Kind == appserver.KindModelNotFound || status == http.StatusNotFound:
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "upstream_model_not_found", "", "the Codex model configured on this worker was not found")
	case te.Kind == appserver.KindBadRequest || status == http.StatusBadRequest:
		return llmapi.NewError(http.StatusBadRequest, llmapi.TypeInvalidRequest, "upstream_bad_request", "", "the model provider rejected the request: "+redact(te.Message))
	case te.Kind == appserver.KindInternalServerError || status >= 500:
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "upstream_error", "", "the model provider failed; retry later")
	default:
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "turn_failed", "", "the Codex turn failed: "+redact(te.Message))
	}
}

var _ turn.Provider = (*Provider)(nil)
