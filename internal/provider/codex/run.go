package codex

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// Run implements turn.Provider.
func (p *Provider) Run(ctx context.Context, req *turn.Request, sink turn.Sink) (res *turn.Result, err error) {
	if until, ok := p.limits.until(); ok {
		return nil, quotaError(until, time.Now(), "")
	}
	ctx, observed := p.observeTurn(ctx, req) // metrics.go
	defer func() { observed(res, err) }()
	streamed := false
	track := sink
	if sink != nil {
		track = func(d turn.Delta) { streamed = true; sink(d) }
	}
	res, sh, err := p.run(ctx, req, track, false)
	if sh != nil && sh.callerBase && p.cfg.Instructions == InstructionsAuto && !streamed && instructionsRefused(err) {
		p.refused.Store(true)
		p.refusedOnce.Do(func() {
			p.log.Warn("the model backend refused custom instructions; this worker now sends Codex's own base prompt (the caller's instructions follow as a developer message) for the rest of its life. Set --instructions to force either way.")
		})
		res, _, err = p.run(ctx, req, sink, true)
	}
	if err != nil {
		if te, ok := errors.AsType[*appserver.TurnError](err); ok && te.Kind == appserver.KindUsageLimitExceeded {
			until := p.limits.exhaust()
			p.log.Warn("the Codex login's usage limit is exhausted; this worker takes no requests until it resets", "until", until.UTC().Format(time.RFC3339))
			return nil, quotaError(until, time.Now(), ": "+redact(te.Message))
		}
		return nil, mapError(ctx, err)
	}
	return res, nil
}

// instructionsRefused recognises the backend refusing a custom base
// prompt: Codex reports the 400 body as the message with kind "other".
func instructionsRefused(err error) bool {
	var te *appserver.TurnError
	return errors.As(err, &te) && (te.Kind == appserver.KindOther || te.Kind == appserver.KindBadRequest || te.Kind == "") &&
		strings.Contains(strings.ToLower(te.Message), "instructions are not valid")
}

// run runs req on the live thread its history extends, or on a fresh one.
func (p *Provider) run(ctx context.Context, req *turn.Request, sink turn.Sink, codexBase bool) (*turn.Result, *shape, error) {
	sh, err := p.shapeOf(req, codexBase)
	if err != nil {
		return nil, nil, err
	}
	tr := newTranscript(sh.key, req.Input)
	var d *driver
	if conv, k := p.convs.claim(tr); conv != nil {
		if d, err = p.resume(ctx, conv, req, k); err != nil {
			return nil, sh, err
		}
	}
	if d == nil {
		if d, err = p.fresh(ctx, sh, req); err != nil {
			return nil, sh, err
		}
	}
	d.sink = sink
	leave := p.busy.enter(d.conv.thread) // metrics.go
	res, err := d.run(ctx)
	leave()
	if err != nil {
		closeConversation(d.conv)
		return nil, sh, err
	}
	if sh.mode == turn.ModeAgent && d.conv.step == nil {
		d.conv.thread.CleanTerminals(ctx) // no command outlives its request
	}
	key := tr.prefix(len(req.Input))
	for _, it := range resultItems(res) {
		key = extend(key, it)
	}
	d.conv.key = key
	p.convs.put(d.conv)
	return res, sh, nil
}

// fresh starts a thread for req and runs its first turn on the whole
// conversation.
func (p *Provider) fresh(ctx context.Context, sh *shape, req *turn.Request) (*driver, error) {
	history, input, err := splitConversation(req.Input, sh.names)
	if err != nil {
		return nil, err
	}
	th, err := p.pool.StartThread(ctx, sh.params)
	if err != nil {
		return nil, err
	}
	conv := &conversation{thread: th, shape: sh}
	tu, err := startTurn(ctx, th, history, input, req)
	if err != nil {
		closeConversation(conv)
		return nil, err
	}
	return newDriver(p, conv, tu), nil
}

// resume continues conv with the items of req after its first k: the
// outputs of a held tool step answer its calls and the same turn goes on;
// new items on an idle thread are added and a turn starts. A request that
// does not fit (outputs that do not answer exactly the returned calls)
// closes conv and returns no driver: it runs fresh.
func (p *Provider) resume(ctx context.Context, conv *conversation, req *turn.Request, k int) (*driver, error) {
	added := req.Input[k:]
	if step := conv.step; step != nil {
		outputs, ok := answers(step, added)
		if !ok {
			closeConversation(conv)
			return nil, nil
		}
		for _, tc := range step.returned {
			if err := step.turn.Respond(ctx, tc.ID, appserver.TextToolResult(true, outputs[tc.ID])); err != nil {
				closeConversation(conv)
				return nil, nil
			}
		}
		for _, id := range step.extra {
			_ = step.turn.Respond(ctx, id, appserver.TextToolResult(false, notRunMessage))
		}
		conv.step = nil
		return newDriver(p, conv, step.turn), nil
	}
	history, input, err := splitConversation(added, conv.shape.names)
	if err != nil {
		closeConversation(conv)
		return nil, err
	}
	tu, err := startTurn(ctx, conv.thread, history, input, req)
	if err != nil {
		closeConversation(conv)
		return nil, nil // the thread is unusable; a fresh one may work
	}
	return newDriver(p, conv, tu), nil
}

// notRunMessage answers a call of a step the client did not receive
// (parallel_tool_calls false returns the first call only).
const notRunMessage = "This call was not run: only one function call per step is allowed. Call it again in a later step if you still need it."

// answers matches added items to a held step: they must be exactly one
// output for each call the client received.
func answers(step *heldStep, added []turn.Item) (map[string]string, bool) {
	if len(added) != len(step.returned) {
		return nil, false
	}
	want := map[string]bool{}
	for _, tc := range step.returned {
		want[tc.ID] = true
	}
	out := map[string]string{}
	for _, it := range added {
		if (it.Type != turn.ItemFunctionCallOutput && it.Type != turn.ItemCustomToolCallOutput) || !want[it.CallID] {
			return nil, false
		}
		if _, dup := out[it.CallID]; dup {
			return nil, false
		}
		out[it.CallID] = it.Output
	}
	return out, true
}

// startTurn injects history into th and starts a turn with input.
func startTurn(ctx context.Context, th *appserver.Thread, history []any, input []appserver.UserInput, req *turn.Request) (*appserver.Turn, error) {
	if err := th.Inject(ctx, history); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil { // do not start a model request for nobody
		return nil, err
	}
	tp := appserver.TurnParams{Input: input, Effort: req.Effort}
	if f := req.Format; f != nil && f.Type == "json_schema" {
		tp.OutputSchema = f.Schema
	}
	return th.StartTurn(ctx, tp)
}

// interruptTimeout bounds ending a turn whose request was cancelled.
const interruptTimeout = 5 * time.Second
