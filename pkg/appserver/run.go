package appserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// subscription receives the notifications and server requests of one
// thread. The reader goroutine pushes into an unbounded queue so a slow
// consumer never stalls other threads.
type subscription struct {
	threadID string
	handler  Handler
	ctx      context.Context // handler ctx: the run's ctx, ended with the run
	wg       sync.WaitGroup  // handler goroutines of this thread

	mu     sync.Mutex
	queue  []rpcMessage
	signal chan struct{} // cap 1: queue became non-empty
}

func (s *subscription) push(m rpcMessage) {
	s.mu.Lock()
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *subscription) take() []rpcMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

func (p *Process) subscribe(ctx context.Context, threadID string, h Handler) *subscription {
	s := &subscription{threadID: threadID, handler: h, ctx: ctx, signal: make(chan struct{}, 1)}
	p.mu.Lock()
	p.threads[threadID] = s
	p.mu.Unlock()
	return s
}

// unsubscribe stops routing to s and waits for its handler goroutines.
func (p *Process) unsubscribe(s *subscription) {
	p.mu.Lock()
	if p.threads[s.threadID] == s {
		delete(p.threads, s.threadID)
	}
	p.mu.Unlock()
	s.wg.Wait()
}

// graceCtx returns a context that ends d after parent ends (or when the
// process dies), so short cleanup calls can finish after a cancellation.
func (p *Process) graceCtx(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	var (
		mu    sync.Mutex
		timer *time.Timer
	)
	stop := context.AfterFunc(parent, func() {
		mu.Lock()
		timer = time.AfterFunc(d, cancel)
		mu.Unlock()
	})
	stopDead := context.AfterFunc(p.ctx, cancel)
	return ctx, func() {
		stop()
		stopDead()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

type threadStartResult struct {
	Thread struct {
		ID string `json:"id"`
	} `json:"thread"`
}

type wireTurn struct {
	ID     string            `json:"id"`
	Status string            `json:"status"`
	Error  *wireTurnError    `json:"error"`
	Items  []json.RawMessage `json:"items"`
}

type turnStartResult struct {
	Turn wireTurn `json:"turn"`
}

func threadStartParams(req *RunRequest) map[string]any {
	params := map[string]any{"ephemeral": true}
	approval := req.ApprovalPolicy
	if approval == "" {
		approval = ApprovalUntrusted
	}
	params["approvalPolicy"] = approval
	sandbox := req.Sandbox
	if sandbox == "" {
		sandbox = SandboxReadOnly
	}
	params["sandbox"] = sandbox
	if req.Cwd != "" {
		params["cwd"] = req.Cwd
	}
	if req.Model != "" && req.Model != "auto" {
		params["model"] = req.Model
	}
	if req.BaseInstructions != "" {
		params["baseInstructions"] = req.BaseInstructions
	}
	if req.DeveloperInstructions != "" {
		params["developerInstructions"] = req.DeveloperInstructions
	}
	if req.ServiceName != "" {
		params["serviceName"] = req.ServiceName
	}
	if len(req.Config) > 0 {
		params["config"] = req.Config
	}
	if len(req.DynamicTools) > 0 {
		tools := make([]map[string]any, 0, len(req.DynamicTools))
		for _, t := range req.DynamicTools {
			schema := t.InputSchema
			if len(schema) == 0 {
				schema = json.RawMessage(`{"type":"object","properties":{}}`)
			}
			tools = append(tools, map[string]any{
				"type": "function", "name": t.Name, "description": t.Description, "inputSchema": schema,
			})
		}
		params["dynamicTools"] = tools
	}
	return params
}

func turnStartParams(threadID string, req *RunRequest) map[string]any {
	input := req.Input
	if input == nil {
		input = []UserInput{}
	}
	params := map[string]any{"threadId": threadID, "input": input}
	if req.Model != "" && req.Model != "auto" {
		params["model"] = req.Model
	}
	if req.Effort != "" {
		params["effort"] = req.Effort
	}
	if len(req.OutputSchema) > 0 {
		params["outputSchema"] = req.OutputSchema
	}
	return params
}

// Run runs one request on a fresh ephemeral thread: thread/start,
// thread/inject_items (if History), turn/start, then streams the turn's
// events to req.OnEvent until turn/completed.
//
// It returns a RunResult whenever the turn started (also alongside an
// error) and an error when:
//   - the turn failed: a *TurnError (errors.As);
//   - the turn was interrupted by someone else: ErrTurnInterrupted;
//   - ctx ended: the turn is interrupted (turn/interrupt, waiting at most
//     Config.InterruptTimeout for it to end) and the error matches
//     ctx.Err();
//   - the process exited: ErrProcessExited;
//   - a JSON-RPC call failed: *RPCError.
func (p *Process) Run(ctx context.Context, req RunRequest) (*RunResult, error) {
	if err := p.beginRun(); err != nil {
		return nil, err
	}
	defer p.endRun()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("appserver: run: %w", err)
	}

	// Setup calls get a short grace after ctx ends so we learn the ids we
	// need to clean up (and never leave a started turn running).
	setupCtx, cancelSetup := p.graceCtx(ctx, p.cfg.InterruptTimeout)
	defer cancelSetup()

	var ts threadStartResult
	if err := p.Call(setupCtx, "thread/start", threadStartParams(&req), &ts); err != nil {
		return nil, p.runErr(ctx, err)
	}
	threadID := ts.Thread.ID
	if threadID == "" {
		return nil, fmt.Errorf("appserver: thread/start: empty thread id")
	}
	h := req.Handler
	if h == nil {
		h = p.cfg.Handler
	}
	hctx, cancelHandlers := context.WithCancel(ctx)
	sub := p.subscribe(hctx, threadID, h)
	defer func() {
		cancelHandlers()
		p.unsubscribe(sub)
		p.releaseThread(threadID)
	}()
	res := &RunResult{ThreadID: threadID}

	if len(req.History) > 0 {
		params := map[string]any{"threadId": threadID, "items": req.History}
		if err := p.Call(setupCtx, "thread/inject_items", params, nil); err != nil {
			return nil, p.runErr(ctx, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("appserver: run: %w", err)
		}
	}

	if err := ctx.Err(); err != nil { // do not start a model request for nobody
		return nil, fmt.Errorf("appserver: run: %w", err)
	}
	var tr turnStartResult
	if err := p.Call(setupCtx, "turn/start", turnStartParams(threadID, &req), &tr); err != nil {
		return nil, p.runErr(ctx, err)
	}
	res.TurnID = tr.Turn.ID
	st := &runState{p: p, req: &req, res: res}
	if err := st.consume(ctx, sub); err != nil {
		return res, err
	}
	return res, st.outcome()
}

// runErr prefers the caller's ctx error over the error of a cut-short call.
func (p *Process) runErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("appserver: run: %w (%v)", cerr, err)
	}
	return err
}

// releaseThread unloads the ephemeral thread without waiting for the
// answer (the response, with an id nobody waits for, is dropped).
func (p *Process) releaseThread(threadID string) {
	if !p.Alive() {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.InterruptTimeout)
	defer cancel()
	msg := struct {
		ID     int64          `json:"id"`
		Method string         `json:"method"`
		Params map[string]any `json:"params"`
	}{p.nextID.Add(1), "thread/unsubscribe", map[string]any{"threadId": threadID}}
	_ = p.send(ctx, msg)
}

type runState struct {
	p   *Process
	req *RunRequest
	res *RunResult

	finalSeen bool // an agentMessage with phase final_answer was seen
	done      bool
	status    string
	turnErr   *TurnError
}

// consume processes events until turn/completed. On ctx end it interrupts
// the turn and returns an error matching ctx.Err().
func (st *runState) consume(ctx context.Context, sub *subscription) error {
	for !st.done {
		select {
		case <-sub.signal:
			st.handleAll(sub.take())
		case <-st.p.dead:
			st.handleAll(sub.take())
			if st.done {
				return nil
			}
			return fmt.Errorf("appserver: turn %s: %w", st.res.TurnID, st.p.exitErr)
		case <-ctx.Done():
			st.handleAll(sub.take())
			if st.done {
				return nil
			}
			st.interrupt(ctx, sub)
			return fmt.Errorf("appserver: turn %s: %w", st.res.TurnID, ctx.Err())
		}
	}
	return nil
}

// interrupt sends turn/interrupt and waits (bounded) for the turn to end.
func (st *runState) interrupt(ctx context.Context, sub *subscription) {
	p := st.p
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.InterruptTimeout)
	defer cancel()
	params := map[string]any{"threadId": st.res.ThreadID, "turnId": st.res.TurnID}
	if err := p.Call(ictx, "turn/interrupt", params, nil); err != nil {
		p.log.Debug("turn/interrupt failed", "thread_id", st.res.ThreadID, "turn_id", st.res.TurnID, "err", err)
	}
	for !st.done {
		select {
		case <-sub.signal:
			st.handleAll(sub.take())
		case <-p.dead:
			return
		case <-ictx.Done():
			p.log.Debug("interrupted turn did not end in time", "thread_id", st.res.ThreadID, "turn_id", st.res.TurnID)
			return
		}
	}
}

func (st *runState) handleAll(msgs []rpcMessage) {
	for _, m := range msgs {
		if st.done {
			return
		}
		st.handle(m)
	}
}

func (st *runState) emit(ev Event) {
	if st.req.OnEvent != nil {
		st.req.OnEvent(ev)
	}
}

func (st *runState) handle(m rpcMessage) {
	var base struct {
		ThreadID string `json:"threadId"`
		TurnID   string `json:"turnId"`
		ItemID   string `json:"itemId"`
	}
	_ = json.Unmarshal(m.Params, &base)
	if base.TurnID != "" && st.res.TurnID != "" && base.TurnID != st.res.TurnID {
		return // another turn of this thread (not started by us)
	}
	ev := Event{Method: m.Method, ThreadID: st.res.ThreadID, TurnID: base.TurnID, ItemID: base.ItemID, Raw: m.Params}
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
			st.itemCompleted(it)
		}
	case "thread/tokenUsage/updated":
		var n struct {
			TokenUsage TokenUsage `json:"tokenUsage"`
		}
		if json.Unmarshal(m.Params, &n) == nil {
			st.res.Usage, st.res.HasUsage = n.TokenUsage, true
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
		ev.Error = n.Error.toError(st.res.ThreadID, st.res.TurnID)
	case "turn/completed":
		var n struct {
			Turn wireTurn `json:"turn"`
		}
		_ = json.Unmarshal(m.Params, &n)
		if n.Turn.ID != "" && n.Turn.ID != st.res.TurnID {
			return
		}
		ev.Kind, ev.TurnID, ev.Status = EventTurnCompleted, st.res.TurnID, n.Turn.Status
		ev.Error = n.Turn.Error.toError(st.res.ThreadID, st.res.TurnID)
		st.done, st.status, st.turnErr = true, n.Turn.Status, ev.Error
		st.res.Status, st.res.Error = n.Turn.Status, ev.Error
		if len(st.res.Items) == 0 {
			// Fall back to the items carried by turn/completed.
			for _, raw := range n.Turn.Items {
				st.itemCompleted(parseItem(raw))
			}
		}
	default:
		ev.Kind = EventNotification
	}
	st.emit(ev)
}

func (st *runState) itemCompleted(it Item) {
	st.res.Items = append(st.res.Items, it)
	if it.Type != "agentMessage" {
		return
	}
	final := it.Phase == "final_answer"
	if final || !st.finalSeen {
		st.res.Text = it.Text
	}
	if final {
		st.finalSeen = true
	}
}

func (st *runState) outcome() error {
	switch st.status {
	case StatusCompleted:
		return nil
	case StatusFailed:
		if st.turnErr != nil {
			return st.turnErr
		}
		return &TurnError{Message: "turn failed without error details", ThreadID: st.res.ThreadID, TurnID: st.res.TurnID}
	case StatusInterrupted:
		return fmt.Errorf("appserver: turn %s: %w", st.res.TurnID, ErrTurnInterrupted)
	}
	return fmt.Errorf("appserver: turn %s ended with status %q", st.res.TurnID, st.status)
}

func parseItem(raw json.RawMessage) Item {
	var it struct {
		Type  string  `json:"type"`
		ID    string  `json:"id"`
		Text  string  `json:"text"`
		Phase *string `json:"phase"`
	}
	_ = json.Unmarshal(raw, &it)
	out := Item{Type: it.Type, ID: it.ID, Raw: raw}
	if it.Type == "agentMessage" {
		out.Text = it.Text
		if it.Phase != nil {
			out.Phase = *it.Phase
		}
	}
	return out
}
