package appserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ThreadParams configure thread/start.
type ThreadParams struct {
	// Cwd is the thread's working directory (absolute); empty lets Codex
	// use the process's.
	Cwd string
	// ApprovalPolicy is "untrusted" (default), "on-request" or "never".
	ApprovalPolicy string
	// Sandbox is the sandbox mode; default "read-only". Ignored when
	// Permissions is set.
	Sandbox string
	// Permissions, if set, names the thread's permission profile (a
	// [permissions.<id>] table of the config, e.g. in Config) instead of
	// a sandbox mode: the App Server takes one or the other.
	Permissions string
	// Model is the model; empty or "auto" lets Codex choose.
	Model string
	// BaseInstructions, if set, replace Codex's base prompt.
	BaseInstructions string
	// DeveloperInstructions, if set, are sent as a developer message.
	DeveloperInstructions string
	// DynamicTools are client-implemented tools offered to the model.
	DynamicTools []DynamicTool
	// Config holds per-thread config overrides (TOML keys as JSON).
	Config map[string]any
	// ServiceName is passed to thread/start (telemetry label).
	ServiceName string
	// Persist keeps a rollout on disk (ephemeral false); the default is
	// an ephemeral thread.
	Persist bool
	// RawEvents asks for the raw model events (experimentalRawEvents):
	// EventRawItem for every item appended to the history and
	// EventRawResponse when a model response ends, with its usage.
	RawEvents bool
	// Handler answers the thread's server requests (nil: the process's
	// Config.Handler, or Deny).
	Handler Handler
	// HoldToolCalls delivers dynamic tool calls (item/tool/call) to the
	// turn's reader as EventToolCall events, to be answered with
	// Turn.Respond, instead of to Handler.
	HoldToolCalls bool
}

// Thread is a loaded App Server thread. Turns run on it one at a time;
// between turns items can be injected. Close it when done.
type Thread struct {
	// ID is the thread id.
	ID string
	// Model is the model the App Server runs the thread with.
	Model string

	proc *Process
	sub  *subscription

	mu     sync.Mutex
	turn   *Turn
	closed bool
	onEnd  func()
}

type threadStartResult struct {
	Thread struct {
		ID string `json:"id"`
	} `json:"thread"`
	Model string `json:"model"`
}

// StartThread starts a thread on p. ctx bounds the call only: the thread
// lives until Close (or the process's end).
func (p *Process) StartThread(ctx context.Context, tp ThreadParams) (*Thread, error) {
	if err := p.beginRun(); err != nil {
		return nil, err
	}
	var ts threadStartResult
	if err := p.Call(ctx, "thread/start", threadParams(&tp), &ts); err != nil {
		p.endRun()
		return nil, err
	}
	if ts.Thread.ID == "" {
		p.endRun()
		return nil, errors.New("appserver: thread/start: empty thread id")
	}
	h := tp.Handler
	if h == nil {
		h = p.cfg.Handler
	}
	hctx, cancel := context.WithCancel(p.ctx)
	t := &Thread{ID: ts.Thread.ID, Model: ts.Model, proc: p}
	t.sub = p.subscribe(hctx, ts.Thread.ID, h, tp.HoldToolCalls)
	t.sub.cancel = cancel
	return t, nil
}

// Process returns the process the thread lives in.
func (t *Thread) Process() *Process { return t.proc }

// Inject appends raw Responses API items to the thread's history
// (thread/inject_items), e.g. from MessageItem, FunctionCallItem and
// FunctionCallOutputItem. It must not be called while a turn runs.
func (t *Thread) Inject(ctx context.Context, items []any) error {
	if len(items) == 0 {
		return nil
	}
	return t.proc.Call(ctx, "thread/inject_items", map[string]any{"threadId": t.ID, "items": items}, nil)
}

// TurnParams configure turn/start.
type TurnParams struct {
	// Input is the user input; it may be empty when the history ends with
	// what the model should answer.
	Input []UserInput
	// Model overrides the thread's model for this turn ("" keeps it).
	Model string
	// Effort is the reasoning effort ("" = default).
	Effort string
	// OutputSchema constrains the final message.
	OutputSchema json.RawMessage
}

type turnStartResult struct {
	Turn wireTurn `json:"turn"`
}

// StartTurn starts a turn; read its events with Turn.Next until it ends.
// Only one turn runs on a thread at a time.
func (t *Thread) StartTurn(ctx context.Context, tp TurnParams) (*Turn, error) {
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		return nil, fmt.Errorf("appserver: thread %s: %w", t.ID, ErrClosed)
	case t.turn != nil && !t.turn.finished():
		t.mu.Unlock()
		return nil, fmt.Errorf("appserver: thread %s already runs turn %s", t.ID, t.turn.ID)
	}
	t.mu.Unlock()
	t.sub.take() // what is left of an earlier turn
	var tr turnStartResult
	if err := t.proc.Call(ctx, "turn/start", turnParams(t.ID, &tp), &tr); err != nil {
		return nil, err
	}
	tu := &Turn{ID: tr.Turn.ID, th: t, held: map[string]*ServerRequest{}}
	t.mu.Lock()
	t.turn = tu
	t.mu.Unlock()
	return tu, nil
}

// OnClose registers fn to run once when the thread is closed.
func (t *Thread) OnClose(fn func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.onEnd = fn
}

// Close ends the thread: a turn still running is interrupted (bounded by
// the process's InterruptTimeout), events stop, and the thread is
// unsubscribed (with thread_unload_delay_secs 0 the App Server unloads it
// at once). It is safe to call more than once.
func (t *Thread) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	tu, onEnd := t.turn, t.onEnd
	t.mu.Unlock()
	if tu != nil && !tu.finished() && t.proc.Alive() {
		ctx, cancel := context.WithTimeout(t.proc.ctx, t.proc.cfg.InterruptTimeout)
		_ = tu.Interrupt(ctx)
		cancel()
	}
	t.sub.cancel()
	t.proc.unsubscribe(t.sub)
	t.proc.releaseThread(t.ID)
	t.proc.endRun()
	if onEnd != nil {
		onEnd()
	}
}

// Closed reports whether Close was called or the process is gone.
func (t *Thread) Closed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed || !t.proc.Alive()
}

// Turn is one running turn of a thread.
type Turn struct {
	// ID is the turn id.
	ID string
	th *Thread

	mu      sync.Mutex
	done    bool
	status  string
	turnErr *TurnError
	held    map[string]*ServerRequest // dynamic tool calls not answered yet, by call id
}

func (tu *Turn) finished() bool {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	return tu.done
}

// Status is the final status once the turn ended ("" before).
func (tu *Turn) Status() string {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	return tu.status
}

// Err is the outcome once the turn ended: nil when completed, a
// *TurnError when failed, ErrTurnInterrupted when interrupted.
func (tu *Turn) Err() error {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	switch tu.status {
	case StatusCompleted:
		return nil
	case StatusFailed:
		if tu.turnErr != nil {
			return tu.turnErr
		}
		return &TurnError{Message: "turn failed without error details", ThreadID: tu.th.ID, TurnID: tu.ID}
	case StatusInterrupted:
		return fmt.Errorf("appserver: turn %s: %w", tu.ID, ErrTurnInterrupted)
	case "":
		return fmt.Errorf("appserver: turn %s has not ended", tu.ID)
	}
	return fmt.Errorf("appserver: turn %s ended with status %q", tu.ID, tu.status)
}

// Next returns the turn's next event, in order. It blocks until one
// arrives, ctx ends (ctx's error), or the process dies (an error matching
// ErrProcessExited). The last event is EventTurnCompleted; after it Next
// returns io.EOF.
func (tu *Turn) Next(ctx context.Context) (Event, error) {
	sub, p := tu.th.sub, tu.th.proc
	for {
		if tu.finished() {
			return Event{}, io.EOF
		}
		if m, ok := sub.pop(); ok {
			if ev, ok := tu.event(m); ok {
				return ev, nil
			}
			continue
		}
		select {
		case <-sub.signal:
		case <-p.dead:
			if m, ok := sub.pop(); ok {
				sub.unpop(m)
				continue
			}
			return Event{}, fmt.Errorf("appserver: turn %s: %w", tu.ID, p.exitErr)
		case <-ctx.Done():
			return Event{}, fmt.Errorf("appserver: turn %s: %w", tu.ID, ctx.Err())
		}
	}
}

// Respond answers a held dynamic tool call (EventToolCall) of this turn.
func (tu *Turn) Respond(ctx context.Context, callID string, res ToolResult) error {
	tu.mu.Lock()
	req := tu.held[callID]
	delete(tu.held, callID)
	tu.mu.Unlock()
	if req == nil {
		return fmt.Errorf("appserver: turn %s: no pending tool call %q", tu.ID, callID)
	}
	if res.ContentItems == nil {
		res.ContentItems = []ToolContent{}
	}
	return tu.th.proc.respond(ctx, req.ID, res, nil)
}

// Pending lists the call ids of held tool calls not answered yet.
func (tu *Turn) Pending() []string {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	out := make([]string, 0, len(tu.held))
	for id := range tu.held {
		out = append(out, id)
	}
	return out
}

// RequestInterrupt asks the App Server to end the turn (turn/interrupt);
// the turn's remaining events, up to EventTurnCompleted with status
// "interrupted", still come through Next.
func (tu *Turn) RequestInterrupt(ctx context.Context) error {
	if tu.finished() {
		return nil
	}
	p := tu.th.proc
	if err := p.Call(ctx, "turn/interrupt", map[string]any{"threadId": tu.th.ID, "turnId": tu.ID}, nil); err != nil {
		p.log.Debug("turn/interrupt failed", "thread_id", tu.th.ID, "turn_id", tu.ID, "err", err)
		return err
	}
	return nil
}

// Interrupt asks the App Server to end the turn and reads its remaining
// events until it ends or ctx ends. The events are discarded.
func (tu *Turn) Interrupt(ctx context.Context) error {
	if tu.finished() {
		return nil
	}
	_ = tu.RequestInterrupt(ctx)
	for {
		if _, err := tu.Next(ctx); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// event converts one message of the thread into an event of this turn;
// ok is false for what belongs to another turn.
func (tu *Turn) event(m rpcMessage) (Event, bool) {
	var base struct {
		ThreadID string `json:"threadId"`
		TurnID   string `json:"turnId"`
		ItemID   string `json:"itemId"`
	}
	_ = json.Unmarshal(m.Params, &base)
	if base.TurnID != "" && base.TurnID != tu.ID {
		return Event{}, false
	}
	ev := Event{Method: m.Method, ThreadID: tu.th.ID, TurnID: base.TurnID, ItemID: base.ItemID, Raw: m.Params}
	if len(m.ID) > 0 { // a held server request: a dynamic tool call
		req := &ServerRequest{ID: m.ID, Method: m.Method, Params: m.Params, ThreadID: tu.th.ID, TurnID: base.TurnID}
		call, err := req.ToolCall()
		if err != nil || call.CallID == "" {
			_ = tu.th.proc.respond(tu.th.proc.ctx, m.ID, nil, &RPCError{Code: CodeInvalidParams, Message: "malformed dynamic tool call"})
			return Event{}, false
		}
		req.ItemID = call.CallID
		tu.mu.Lock()
		tu.held[call.CallID] = req
		tu.mu.Unlock()
		ev.Kind, ev.ToolCall, ev.ItemID = EventToolCall, call, call.CallID
		return ev, true
	}
	switch m.Method {
	case "turn/started":
		ev.Kind = EventTurnStarted
	case "item/agentMessage/delta":
		var d struct {
			Delta string `json:"delta"`
		}
		_ = json.Unmarshal(m.Params, &d)
		ev.Kind, ev.Delta = EventAgentMessageDelta, d.Delta
	case "item/started", "item/completed":
		var n struct {
			Item json.RawMessage `json:"item"`
		}
		_ = json.Unmarshal(m.Params, &n)
		it := parseItem(n.Item)
		ev.Item, ev.ItemID = &it, it.ID
		ev.Kind = EventItemStarted
		if m.Method == "item/completed" {
			ev.Kind = EventItemCompleted
		}
	case "rawResponseItem/completed":
		var n struct {
			Item json.RawMessage `json:"item"`
		}
		_ = json.Unmarshal(m.Params, &n)
		ev.Kind, ev.RawItem = EventRawItem, n.Item
	case "rawResponse/completed":
		var n struct {
			ResponseID string               `json:"responseId"`
			Usage      *TokenUsageBreakdown `json:"usage"`
		}
		_ = json.Unmarshal(m.Params, &n)
		ev.Kind, ev.ResponseID, ev.ResponseUsage = EventRawResponse, n.ResponseID, n.Usage
	case "thread/tokenUsage/updated":
		var n struct {
			TokenUsage TokenUsage `json:"tokenUsage"`
		}
		if json.Unmarshal(m.Params, &n) == nil {
			u := n.TokenUsage
			ev.Usage = &u
		}
		ev.Kind = EventTokenUsage
	case "error":
		var n struct {
			Error     *wireTurnError `json:"error"`
			WillRetry bool           `json:"willRetry"`
		}
		_ = json.Unmarshal(m.Params, &n)
		ev.Kind, ev.WillRetry = EventError, n.WillRetry
		ev.Error = n.Error.toError(tu.th.ID, tu.ID)
	case "turn/completed":
		var n struct {
			Turn wireTurn `json:"turn"`
		}
		_ = json.Unmarshal(m.Params, &n)
		if n.Turn.ID != "" && n.Turn.ID != tu.ID {
			return Event{}, false
		}
		ev.Kind, ev.TurnID, ev.Status = EventTurnCompleted, tu.ID, n.Turn.Status
		ev.Error = n.Turn.Error.toError(tu.th.ID, tu.ID)
		for _, raw := range n.Turn.Items {
			ev.TurnItems = append(ev.TurnItems, parseItem(raw))
		}
		tu.mu.Lock()
		tu.done, tu.status, tu.turnErr = true, n.Turn.Status, ev.Error
		tu.held = map[string]*ServerRequest{}
		tu.mu.Unlock()
	default:
		ev.Kind = EventNotification
	}
	return ev, true
}

// CleanTerminals ends the background terminals (commands still running)
// the thread's turns started (thread/backgroundTerminals/clean), so no
// command outlives the request that started it. Errors are logged, not
// returned: the thread may have none.
func (t *Thread) CleanTerminals(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.proc.cfg.InterruptTimeout)
	defer cancel()
	if err := t.proc.Call(ctx, "thread/backgroundTerminals/clean", map[string]any{"threadId": t.ID}, nil); err != nil {
		t.proc.log.Debug("thread/backgroundTerminals/clean failed", "thread_id", t.ID, "err", err)
	}
}
