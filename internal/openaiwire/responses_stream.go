package openaiwire

import (
	"encoding/json"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// responsesStream emits the typed Responses API stream events. Output
// items get their output_index in the order they start; the final object
// lists them in that order too (Call.order).
type responsesStream struct {
	c       *Call
	m       Meta
	seq     int64
	started bool
	// items by key, in output order; text goes to the open message item.
	items    map[string]*streamItem
	order    []*streamItem
	textItem *streamItem
	// annotations of the answer, known at Finish.
	annotations []json.RawMessage
}

// Kinds of stream items (their output item types).
const (
	kindMessage   = "message"
	kindFunction  = "function_call"
	kindCustom    = "custom_tool_call"
	kindWebSearch = "web_search_call"
)

type streamItem struct {
	outputIndex int
	kind        string
	id          string
	text        string
	call        turn.ToolCall
	action      json.RawMessage
	done        bool
}

func (s *responsesStream) event(typ string, fields map[string]any) json.RawMessage {
	fields["type"] = typ
	fields["sequence_number"] = s.seq
	s.seq++
	return mustJSON(fields)
}

func (s *responsesStream) start() []json.RawMessage {
	if s.started {
		return nil
	}
	s.started = true
	obj := s.c.responseObject(s.m, nil, "in_progress")
	return []json.RawMessage{
		s.event("response.created", map[string]any{"response": obj}),
		s.event("response.in_progress", map[string]any{"response": obj}),
	}
}

// add starts the output item key at the next output index.
func (s *responsesStream) add(key, kind, id string) *streamItem {
	it := &streamItem{outputIndex: len(s.order), kind: kind, id: id}
	s.items[key] = it
	s.order = append(s.order, it)
	s.c.order = append(s.c.order, key)
	return it
}

func (s *responsesStream) openText() []json.RawMessage {
	if s.textItem != nil {
		return nil
	}
	it := s.add(keyMessage, kindMessage, s.c.itemID(s.m, keyMessage, "msg"))
	s.textItem = it
	return []json.RawMessage{
		s.event("response.output_item.added", map[string]any{"output_index": it.outputIndex, "item": s.c.messageItem(s.m, "", nil, "in_progress")}),
		s.event("response.content_part.added", map[string]any{
			"item_id": it.id, "output_index": it.outputIndex, "content_index": 0,
			"part": outputText{Type: "output_text", Text: "", Annotations: []json.RawMessage{}, Logprobs: []any{}},
		}),
	}
}

// callItem is the wire item of a tool call in the given status.
func callItem(it *streamItem, status string) any {
	if it.kind == kindCustom {
		return customCallItem{Type: kindCustom, ID: it.id, CallID: it.call.ID, Name: it.call.Name, Namespace: it.call.Namespace, Input: it.call.Arguments, Status: status}
	}
	return functionCallItem{Type: kindFunction, ID: it.id, CallID: it.call.ID, Name: it.call.Name, Namespace: it.call.Namespace, Arguments: it.call.Arguments, Status: status}
}

func (s *responsesStream) closeItem(it *streamItem) []json.RawMessage {
	if it.done {
		return nil
	}
	it.done = true
	at := func(fields map[string]any) map[string]any {
		fields["item_id"], fields["output_index"] = it.id, it.outputIndex
		return fields
	}
	switch it.kind {
	case kindMessage:
		var frames []json.RawMessage
		for i, a := range s.annotations {
			frames = append(frames, s.event("response.output_text.annotation.added", at(map[string]any{
				"content_index": 0, "annotation_index": i, "annotation": a,
			})))
		}
		part := outputText{Type: "output_text", Text: it.text, Annotations: annotationsOf(s.annotations), Logprobs: []any{}}
		return append(frames,
			s.event("response.output_text.done", at(map[string]any{"content_index": 0, "text": it.text, "logprobs": []any{}})),
			s.event("response.content_part.done", at(map[string]any{"content_index": 0, "part": part})),
			s.event("response.output_item.done", map[string]any{"output_index": it.outputIndex, "item": s.c.messageItem(s.m, it.text, s.annotations, "completed")}),
		)
	case kindWebSearch:
		return []json.RawMessage{
			s.event("response.web_search_call.completed", at(map[string]any{})),
			s.event("response.output_item.done", map[string]any{"output_index": it.outputIndex,
				"item": webSearchItem{Type: kindWebSearch, ID: it.id, Status: "completed", Action: searchAction(it.action)}}),
		}
	case kindCustom:
		return []json.RawMessage{
			s.event("response.custom_tool_call_input.done", at(map[string]any{"input": it.call.Arguments})),
			s.event("response.output_item.done", map[string]any{"output_index": it.outputIndex, "item": callItem(it, "completed")}),
		}
	default:
		return []json.RawMessage{
			s.event("response.function_call_arguments.done", at(map[string]any{"name": it.call.Name, "arguments": it.call.Arguments})),
			s.event("response.output_item.done", map[string]any{"output_index": it.outputIndex, "item": callItem(it, "completed")}),
		}
	}
}

func (s *responsesStream) Delta(d turn.Delta) []json.RawMessage {
	frames := s.start()
	switch d.Kind {
	case turn.DeltaText:
		if d.Text == "" {
			return frames
		}
		frames = append(frames, s.openText()...)
		it := s.textItem
		it.text += d.Text
		return append(frames, s.event("response.output_text.delta", map[string]any{
			"item_id": it.id, "output_index": it.outputIndex, "content_index": 0, "delta": d.Text, "logprobs": []any{},
		}))
	case turn.DeltaToolCall:
		key := keyCall(d.Index)
		it := s.items[key]
		if it == nil {
			if s.textItem != nil {
				frames = append(frames, s.closeItem(s.textItem)...)
			}
			kind, prefix := kindFunction, "fc"
			if d.ToolCall.Custom {
				kind, prefix = kindCustom, "ctc"
			}
			it = s.add(key, kind, s.c.itemID(s.m, key, prefix))
			it.call = turn.ToolCall{ID: d.ToolCall.ID, Name: d.ToolCall.Name, Namespace: d.ToolCall.Namespace, Custom: d.ToolCall.Custom}
			frames = append(frames, s.event("response.output_item.added", map[string]any{"output_index": it.outputIndex, "item": callItem(it, "in_progress")}))
		}
		if d.ArgumentsDelta != "" {
			it.call.Arguments += d.ArgumentsDelta
			typ := "response.function_call_arguments.delta"
			if it.kind == kindCustom {
				typ = "response.custom_tool_call_input.delta"
			}
			frames = append(frames, s.event(typ, map[string]any{"item_id": it.id, "output_index": it.outputIndex, "delta": d.ArgumentsDelta}))
		}
		return frames
	case turn.DeltaWebSearch:
		key := keySearch(d.Index)
		it := s.items[key]
		if it == nil {
			it = s.add(key, kindWebSearch, s.c.itemID(s.m, key, "ws"))
			it.action = d.WebSearch.Action
			frames = append(frames,
				s.event("response.output_item.added", map[string]any{"output_index": it.outputIndex,
					"item": webSearchItem{Type: kindWebSearch, ID: it.id, Status: "in_progress", Action: searchAction(it.action)}}),
				s.event("response.web_search_call.in_progress", map[string]any{"item_id": it.id, "output_index": it.outputIndex}),
				s.event("response.web_search_call.searching", map[string]any{"item_id": it.id, "output_index": it.outputIndex}),
			)
		}
		if d.Done && !it.done {
			if !isNull(d.WebSearch.Action) {
				it.action = d.WebSearch.Action
			}
			frames = append(frames, s.closeItem(it)...)
		}
		return frames
	}
	return frames
}

func (s *responsesStream) Finish(res *turn.Result) []json.RawMessage {
	frames := s.start()
	var sent streamed
	if s.textItem != nil {
		sent.text = s.textItem.text
	}
	for i := range res.ToolCalls {
		if it := s.items[keyCall(i)]; it != nil {
			if sent.args == nil {
				sent.args = map[int]string{}
			}
			sent.args[i] = it.call.Arguments
		}
	}
	for i := range res.WebSearches {
		if it := s.items[keySearch(i)]; it != nil && it.done {
			if sent.searches == nil {
				sent.searches = map[int]bool{}
			}
			sent.searches[i] = true
		}
	}
	// The annotations go with the message when it closes: here, or in the
	// catch-up when a call starts after it. A message a streamed call has
	// closed already carries them only in response.completed.
	s.annotations = res.Annotations
	frames = append(frames, catchUp(s, res, sent)...)
	if s.textItem == nil && res.Text == "" && len(res.ToolCalls) == 0 {
		frames = append(frames, s.openText()...) // an empty answer is still a message
	}
	for _, it := range s.order {
		if it.kind == kindWebSearch && !it.done {
			// Started but never completed by the provider: complete it with
			// the result's action, if the result has it.
			for i, ws := range res.WebSearches {
				if s.items[keySearch(i)] == it && !isNull(ws.Action) {
					it.action = ws.Action
				}
			}
		}
		frames = append(frames, s.closeItem(it)...)
	}
	return append(frames, s.event("response.completed", map[string]any{"response": s.c.responseObject(s.m, res, "completed")}))
}

func (s *responsesStream) Fail(err *llmapi.APIError) []json.RawMessage {
	frames := s.start()
	obj := s.c.responseObject(s.m, nil, "failed")
	code := err.Code
	if code == "" {
		code = "server_error"
	}
	obj.Error = map[string]any{"code": code, "message": err.Message}
	return append(frames, s.event("response.failed", map[string]any{"response": obj}))
}
