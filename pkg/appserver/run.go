package appserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// subscription receives the notifications (and held server requests) of
// one thread. The reader goroutine pushes into an unbounded queue so a slow
// consumer never stalls other threads.
type subscription struct {
	threadID string
	handler  Handler
	hold     bool               // dynamic tool calls are queued, not handled
	ctx      context.Context    // handler ctx: ends with the thread
	cancel   context.CancelFunc // ends ctx
	wg       sync.WaitGroup     // handler goroutines of this thread

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

func (s *subscription) pop() (rpcMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return rpcMessage{}, false
	}
	m := s.queue[0]
	s.queue[0] = rpcMessage{}
	s.queue = s.queue[1:]
	return m, true
}

// unpop puts m back at the head of the queue.
func (s *subscription) unpop(m rpcMessage) {
	s.mu.Lock()
	s.queue = append([]rpcMessage{m}, s.queue...)
	s.mu.Unlock()
}

func (p *Process) subscribe(ctx context.Context, threadID string, h Handler, hold bool) *subscription {
	s := &subscription{threadID: threadID, handler: h, hold: hold, ctx: ctx, signal: make(chan struct{}, 1)}
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

type wireTurn struct {
	ID     string            `json:"id"`
	Status string            `json:"status"`
	Error  *wireTurnError    `json:"error"`
	Items  []json.RawMessage `json:"items"`
}

// threadParams renders thread/start params.
func threadParams(tp *ThreadParams) map[string]any {
	params := map[string]any{"ephemeral": !tp.Persist}
	approval := tp.ApprovalPolicy
	if approval == "" {
		approval = ApprovalUntrusted
	}
	params["approvalPolicy"] = approval
	switch {
	case tp.Permissions != "":
		params["permissions"] = tp.Permissions
	case tp.Sandbox != "":
		params["sandbox"] = tp.Sandbox
	default:
		params["sandbox"] = SandboxReadOnly
	}
	if tp.Cwd != "" {
		params["cwd"] = tp.Cwd
	}
	if tp.Model != "" && tp.Model != "auto" {
		params["model"] = tp.Model
	}
	if tp.BaseInstructions != "" {
		params["baseInstructions"] = tp.BaseInstructions
	}
	if tp.DeveloperInstructions != "" {
		params["developerInstructions"] = tp.DeveloperInstructions
	}
	if tp.ServiceName != "" {
		params["serviceName"] = tp.ServiceName
	}
	// A closed thread is unloaded at once unless the caller says
	// otherwise (Codex keeps it loaded for 60 s by default, ≈0.5 MB each).
	cfg := map[string]any{"thread_unload_delay_secs": 0}
	for k, v := range tp.Config {
		cfg[k] = v
	}
	params["config"] = cfg
	if tp.RawEvents {
		params["experimentalRawEvents"] = true
	}
	if len(tp.DynamicTools) > 0 {
		params["dynamicTools"] = dynamicToolSpecs(tp.DynamicTools)
	}
	return params
}

// dynamicToolSpecs renders DynamicToolSpec values: top-level functions in
// order, and the tools of each namespace grouped into one namespace spec
// where the namespace first appears.
func dynamicToolSpecs(tools []DynamicTool) []map[string]any {
	out := make([]map[string]any, 0, len(tools))
	namespaces := map[string]map[string]any{}
	for _, t := range tools {
		schema := t.InputSchema
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		fn := map[string]any{"type": "function", "name": t.Name, "description": t.Description, "inputSchema": schema}
		if t.Namespace == "" {
			out = append(out, fn)
			continue
		}
		ns := namespaces[t.Namespace]
		if ns == nil {
			ns = map[string]any{"type": "namespace", "name": t.Namespace, "description": t.NamespaceDescription, "tools": []map[string]any{}}
			namespaces[t.Namespace] = ns
			out = append(out, ns)
		}
		ns["tools"] = append(ns["tools"].([]map[string]any), fn)
	}
	return out
}

// turnParams renders turn/start params.
func turnParams(threadID string, tp *TurnParams) map[string]any {
	input := tp.Input
	if input == nil {
		input = []UserInput{}
	}
	params := map[string]any{"threadId": threadID, "input": input}
	if tp.Model != "" && tp.Model != "auto" {
		params["model"] = tp.Model
	}
	if tp.Effort != "" {
		params["effort"] = tp.Effort
	}
	if len(tp.OutputSchema) > 0 {
		params["outputSchema"] = tp.OutputSchema
	}
	return params
}

// Run runs one request on a fresh ephemeral thread: thread/start,
// thread/inject_items (if History), turn/start, then streams the turn's
// events to req.OnEvent until turn/completed, and closes the thread.
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
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("appserver: run: %w", err)
	}
	// Setup calls get a short grace after ctx ends so we learn the ids we
	// need to clean up (and never leave a started turn running).
	setupCtx, cancelSetup := p.graceCtx(ctx, p.cfg.InterruptTimeout)
	defer cancelSetup()
	th, err := p.StartThread(setupCtx, req.threadParams())
	if err != nil {
		return nil, p.runErr(ctx, err)
	}
	defer th.Close()
	return th.run(ctx, setupCtx, req)
}

// run injects req.History, runs one turn and collects its result.
func (th *Thread) run(ctx, setupCtx context.Context, req RunRequest) (*RunResult, error) {
	p := th.proc
	if err := th.Inject(setupCtx, req.History); err != nil {
		return nil, p.runErr(ctx, err)
	}
	if err := ctx.Err(); err != nil { // do not start a model request for nobody
		return nil, fmt.Errorf("appserver: run: %w", err)
	}
	tu, err := th.StartTurn(setupCtx, TurnParams{Input: req.Input, Model: req.Model, Effort: req.Effort, OutputSchema: req.OutputSchema})
	if err != nil {
		return nil, p.runErr(ctx, err)
	}
	res := &RunResult{ThreadID: th.ID, TurnID: tu.ID}
	c := collector{res: res}
	for {
		ev, err := tu.Next(ctx)
		switch {
		case errors.Is(err, io.EOF):
			return res, tu.Err()
		case err != nil && ctx.Err() != nil:
			c.interrupt(ctx, tu, p.cfg.InterruptTimeout)
			return res, fmt.Errorf("appserver: turn %s: %w", tu.ID, ctx.Err())
		case err != nil:
			return res, err
		}
		c.add(ev)
		if req.OnEvent != nil {
			req.OnEvent(ev)
		}
	}
}

// runErr prefers the caller's ctx error over the error of a cut-short call.
func (p *Process) runErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("appserver: run: %w (%v)", cerr, err)
	}
	return err
}

// releaseThread unloads the thread without waiting for the answer (the
// response, with an id nobody waits for, is dropped).
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

// collector builds a RunResult from a turn's events.
type collector struct {
	res       *RunResult
	finalSeen bool // an agentMessage with phase final_answer was seen
}

// interrupt ends tu (bounded by d) and collects its last events.
func (c *collector) interrupt(ctx context.Context, tu *Turn, d time.Duration) {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	_ = tu.RequestInterrupt(ictx)
	for {
		ev, err := tu.Next(ictx)
		if err != nil {
			return
		}
		c.add(ev)
	}
}

func (c *collector) add(ev Event) {
	switch ev.Kind {
	case EventItemCompleted:
		c.item(*ev.Item)
	case EventTokenUsage:
		if ev.Usage != nil {
			c.res.Usage, c.res.HasUsage = *ev.Usage, true
		}
	case EventTurnCompleted:
		c.res.Status, c.res.Error = ev.Status, ev.Error
		if len(c.res.Items) == 0 {
			// Fall back to the items carried by turn/completed.
			for _, it := range ev.TurnItems {
				c.item(it)
			}
		}
	}
}

func (c *collector) item(it Item) {
	c.res.Items = append(c.res.Items, it)
	if it.Type != "agentMessage" {
		return
	}
	final := it.Phase == "final_answer"
	if final || !c.finalSeen {
		c.res.Text = it.Text
	}
	if final {
		c.finalSeen = true
	}
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
