package codex

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// driver reads one request's part of a turn: it streams text and web
// searches, collects the client's tool calls in the model's order, and ends
// at the model-step boundary (the response has ended and every one of its
// client calls has arrived as a held item/tool/call) or when the turn
// ends.
type driver struct {
	p    *Provider
	conv *conversation
	tu   *appserver.Turn
	sink turn.Sink

	// The current model response: its client calls in the model's order
	// (from the raw items), which of them arrived as held calls, and
	// whether the response has ended.
	calls      []turn.ToolCall
	dispatched map[string]bool
	ended      bool
	// What the client receives of them: returned, and the calls of the
	// step beyond the first when parallel_tool_calls is false.
	returned []turn.ToolCall
	extra    []string

	messages    []message
	byID        map[string]int // message index by item id
	webSearches []turn.WebSearchCall
	searchIndex map[string]int
	lastItem    string
	streamed    bool

	usage       turn.Usage
	sawUsage    bool
	threadUsage *appserver.TokenUsage
}

// message is one agent message of the request.
type message struct {
	id          string
	text        string
	annotations []json.RawMessage
}

func newDriver(p *Provider, conv *conversation, tu *appserver.Turn) *driver {
	return &driver{p: p, conv: conv, tu: tu, dispatched: map[string]bool{}, byID: map[string]int{}, searchIndex: map[string]int{}}
}

// run reads events until the step boundary or the end of the turn.
func (d *driver) run(ctx context.Context) (*turn.Result, error) {
	for {
		ev, err := d.tu.Next(ctx)
		switch {
		case errors.Is(err, io.EOF):
			return d.finish()
		case err != nil && ctx.Err() != nil:
			ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), interruptTimeout)
			_ = d.tu.Interrupt(ictx)
			cancel()
			return nil, ctx.Err()
		case err != nil:
			return nil, err
		}
		d.handle(ev)
		if d.stepComplete() {
			return d.toolStep(), nil
		}
	}
}

func (d *driver) handle(ev appserver.Event) {
	switch ev.Kind {
	case appserver.EventAgentMessageDelta:
		if ev.Delta == "" || d.sink == nil {
			return
		}
		if d.lastItem != "" && ev.ItemID != d.lastItem && d.streamed {
			d.sink(turn.Delta{Kind: turn.DeltaText, Text: messageSeparator})
		}
		d.lastItem, d.streamed = ev.ItemID, true
		d.sink(turn.Delta{Kind: turn.DeltaText, Text: ev.Delta})
	case appserver.EventItemStarted:
		if ev.Item.Type == "webSearch" {
			d.searchStarted(ev.Item.ID)
		}
	case appserver.EventItemCompleted:
		if ev.Item.Type == "agentMessage" {
			d.message(ev.Item.ID).text = ev.Item.Text
		}
	case appserver.EventRawItem:
		d.rawItem(ev.RawItem)
	case appserver.EventToolCall:
		tc := ev.ToolCall
		if !d.known(tc.CallID) {
			// A call without a raw item (Codex's code mode runs client
			// tools from its own exec tool): it counts in arrival order.
			args := string(tc.Arguments)
			var s string
			if json.Unmarshal(tc.Arguments, &s) == nil {
				args = s
			}
			if call, ok := d.conv.shape.names.clientCall(tc.CallID, tc.Namespace, tc.Tool, args); ok {
				d.addCall(call)
			}
		}
		d.dispatched[tc.CallID] = true
	case appserver.EventRawResponse:
		d.ended = true
		if u := ev.ResponseUsage; u != nil {
			d.sawUsage = true
			d.usage.InputTokens += u.InputTokens
			d.usage.CachedTokens += u.CachedInputTokens
			d.usage.OutputTokens += u.OutputTokens
			d.usage.ReasoningTokens += u.ReasoningOutputTokens
			d.usage.TotalTokens += u.TotalTokens
		}
	case appserver.EventTokenUsage:
		d.threadUsage = ev.Usage
	}
}

// rawItem follows the model's output items: client calls in its order,
// citations of its messages, its web searches. A model item also means a
// new response is under way.
func (d *driver) rawItem(raw json.RawMessage) {
	var it struct {
		Type      string          `json:"type"`
		ID        string          `json:"id"`
		Role      string          `json:"role"`
		CallID    string          `json:"call_id"`
		Name      string          `json:"name"`
		Namespace string          `json:"namespace"`
		Arguments string          `json:"arguments"`
		Action    json.RawMessage `json:"action"`
		Content   []struct {
			Type        string            `json:"type"`
			Annotations []json.RawMessage `json:"annotations"`
		} `json:"content"`
	}
	if json.Unmarshal(raw, &it) != nil {
		return
	}
	switch it.Type {
	case "function_call":
		d.ended = false
		if call, ok := d.conv.shape.names.clientCall(it.CallID, it.Namespace, it.Name, it.Arguments); ok && !d.known(it.CallID) {
			d.addCall(call)
		}
	case "function_call_output":
		// Codex answered a call itself (e.g. its arguments did not
		// parse): it will not come to the client.
		d.drop(it.CallID)
	case "message":
		if it.Role != "assistant" {
			return
		}
		d.ended = false
		m := d.message(it.ID)
		for _, c := range it.Content {
			m.annotations = append(m.annotations, c.Annotations...)
		}
	case "web_search_call":
		d.ended = false
		d.searchCompleted(it.ID, it.Action)
	case "reasoning", "custom_tool_call", "local_shell_call":
		d.ended = false
	}
}

func (d *driver) known(callID string) bool {
	for _, c := range d.calls {
		if c.ID == callID {
			return true
		}
	}
	return false
}

// addCall records a client call of the current step and streams it when
// the client receives it: all of them, or only the step's first when the
// client disallows parallel calls.
func (d *driver) addCall(call turn.ToolCall) {
	d.calls = append(d.calls, call)
	if !d.conv.shape.parallel && len(d.returned) > 0 {
		d.extra = append(d.extra, call.ID)
		return
	}
	index := len(d.returned)
	d.returned = append(d.returned, call)
	if d.sink != nil {
		d.sink(turn.Delta{Kind: turn.DeltaToolCall, Index: index, ToolCall: turn.ToolCall{ID: call.ID, Name: call.Name, Namespace: call.Namespace, Custom: call.Custom}})
		d.sink(turn.Delta{Kind: turn.DeltaToolCall, Index: index, ArgumentsDelta: call.Arguments})
	}
}

func (d *driver) drop(callID string) {
	for i, c := range d.calls {
		if c.ID == callID {
			d.calls = append(d.calls[:i:i], d.calls[i+1:]...)
			break
		}
	}
	for i, c := range d.returned {
		if c.ID == callID {
			d.returned = append(d.returned[:i:i], d.returned[i+1:]...)
			break
		}
	}
}

// stepComplete: the response has ended and each of its client calls has
// arrived, so no further call of this step can come.
func (d *driver) stepComplete() bool {
	if !d.ended || len(d.returned) == 0 {
		return false
	}
	for _, c := range d.calls {
		if !d.dispatched[c.ID] {
			return false
		}
	}
	return true
}

func (d *driver) message(id string) *message {
	if i, ok := d.byID[id]; ok {
		return &d.messages[i]
	}
	d.byID[id] = len(d.messages)
	d.messages = append(d.messages, message{id: id})
	return &d.messages[len(d.messages)-1]
}

func (d *driver) searchStarted(id string) {
	if _, ok := d.searchIndex[id]; ok {
		return
	}
	d.searchIndex[id] = len(d.webSearches)
	d.webSearches = append(d.webSearches, turn.WebSearchCall{ID: id})
	if d.sink != nil {
		d.sink(turn.Delta{Kind: turn.DeltaWebSearch, Index: d.searchIndex[id], WebSearch: turn.WebSearchCall{ID: id}})
	}
}

func (d *driver) searchCompleted(id string, action json.RawMessage) {
	d.searchStarted(id)
	i := d.searchIndex[id]
	if len(action) == 0 || string(action) == "null" {
		action = json.RawMessage(`{"type":"search"}`)
	}
	d.webSearches[i].Action = action
	if d.sink != nil {
		d.sink(turn.Delta{Kind: turn.DeltaWebSearch, Index: i, WebSearch: d.webSearches[i], Done: true})
	}
}

// toolStep ends the request at a step that called client tools; the turn
// stays open with the calls held for the client's outputs.
func (d *driver) toolStep() *turn.Result {
	d.conv.step = &heldStep{turn: d.tu, returned: d.returned, extra: d.extra}
	res := d.result(turn.FinishToolCalls)
	res.ToolCalls = append([]turn.ToolCall(nil), d.returned...)
	return res
}

// finish ends the request with the turn.
func (d *driver) finish() (*turn.Result, error) {
	d.conv.step = nil
	if err := d.tu.Err(); err != nil {
		return nil, err
	}
	return d.result(turn.FinishStop), nil
}

func (d *driver) result(finish turn.FinishReason) *turn.Result {
	res := &turn.Result{Finish: finish, Usage: d.usage, WebSearches: d.webSearches}
	if !d.sawUsage && d.threadUsage != nil {
		u := d.threadUsage.Last
		res.Usage = turn.Usage{InputTokens: u.InputTokens, CachedTokens: u.CachedInputTokens, OutputTokens: u.OutputTokens,
			ReasoningTokens: u.ReasoningOutputTokens, TotalTokens: u.TotalTokens}
	}
	var text strings.Builder
	for _, m := range d.messages {
		if m.text == "" {
			continue
		}
		if text.Len() > 0 {
			text.WriteString(messageSeparator)
		}
		offset := utf8.RuneCountInString(text.String())
		text.WriteString(m.text)
		for _, a := range m.annotations {
			res.Annotations = append(res.Annotations, shiftAnnotation(a, offset))
		}
	}
	res.Text = text.String()
	return res
}

// shiftAnnotation moves a citation's character range by offset (the text
// before its message in the joined answer).
func shiftAnnotation(a json.RawMessage, offset int) json.RawMessage {
	if offset == 0 {
		return a
	}
	var m map[string]any
	if json.Unmarshal(a, &m) != nil {
		return a
	}
	for _, k := range []string{"start_index", "end_index"} {
		if v, ok := m[k].(float64); ok {
			m[k] = int(v) + offset
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return a
	}
	return b
}

// messageSeparator joins several agent messages of one turn.
const messageSeparator = "\n\n"
