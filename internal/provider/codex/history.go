package codex

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// splitConversation turns the items to add to a thread into history items
// (each a real message, function call or output, in order) and the turn's
// input: a final user message becomes the input; anything else is injected
// whole and the turn starts with empty input.
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
		raw, err := historyItem(it, names)
		if err != nil {
			return nil, nil, err
		}
		if raw != nil {
			history = append(history, raw)
		}
	}
	return history, input, nil
}

// historyItem is the Responses API item Codex is given for it (nil for an
// item the model needs not see again).
func historyItem(it turn.Item, names toolNames) (any, error) {
	switch it.Type {
	case turn.ItemMessage:
		return messageItem(it), nil
	case turn.ItemFunctionCall, turn.ItemCustomToolCall:
		c := names.codex(toolRef{it.Namespace, it.Name})
		item := appserver.FunctionCallItem(it.CallID, c.name, names.codexArguments(it))
		if c.namespace != "" {
			item["namespace"] = c.namespace
		}
		return item, nil
	case turn.ItemFunctionCallOutput, turn.ItemCustomToolCallOutput:
		return appserver.FunctionCallOutputItem(it.CallID, it.Output), nil
	case turn.ItemWebSearchCall:
		action := it.Action
		if len(action) == 0 {
			action = json.RawMessage(`{"type":"other"}`)
		}
		item := map[string]any{"type": "web_search_call", "status": "completed", "action": action}
		if it.ID != "" {
			item["id"] = it.ID
		}
		return item, nil
	}
	return nil, llmapi.InvalidRequest("", "unsupported_item", fmt.Sprintf("conversation item type %q is not supported", it.Type))
}

// messageItem is a Responses API message item: user and developer text as
// input_text, images as input_image, assistant text as output_text (with
// its annotations).
func messageItem(it turn.Item) map[string]any {
	content := make([]any, 0, len(it.Content))
	for _, part := range it.Content {
		switch {
		case part.Type == turn.PartImage:
			content = append(content, map[string]any{"type": "input_image", "image_url": part.ImageURL})
		case it.Role == turn.RoleAssistant:
			p := map[string]any{"type": "output_text", "text": part.Text}
			if len(part.Annotations) > 0 {
				p["annotations"] = part.Annotations
			}
			content = append(content, p)
		default:
			content = append(content, map[string]any{"type": "input_text", "text": part.Text})
		}
	}
	return map[string]any{"type": "message", "role": string(it.Role), "content": content}
}

// transcript hashes a conversation so a request can find the live thread
// whose history it extends: prefix(k) identifies the first k items under a
// thread shape. Item ids, citations and web search calls do not count
// (clients of the chat API never send them back; Responses API clients may
// drop ids).
type transcript struct {
	hashes [][32]byte // hashes[k] covers items[:k]
}

func newTranscript(shapeKey [32]byte, items []turn.Item) transcript {
	t := transcript{hashes: make([][32]byte, 0, len(items)+1)}
	h := shapeKey
	t.hashes = append(t.hashes, h)
	for _, it := range items {
		h = extend(h, it)
		t.hashes = append(t.hashes, h)
	}
	return t
}

// extend is the hash of a conversation whose hash is h plus it.
func extend(h [32]byte, it turn.Item) [32]byte {
	if it.Type == turn.ItemWebSearchCall {
		return h
	}
	it.ID = ""
	if len(it.Content) > 0 {
		parts := make([]turn.Part, len(it.Content))
		for i, p := range it.Content {
			p.Annotations = nil // not every client sends citations back
			parts[i] = p
		}
		it.Content = parts
	}
	b, _ := json.Marshal(it) // plain fields and valid raw JSON always encode
	return sha256.Sum256(append(h[:], b...))
}

// prefix is the hash of the first k items.
func (t transcript) prefix(k int) [32]byte { return t.hashes[k] }

// resultItems are the items a client sends back for res in its next
// request: the answer (with its annotations) unless the step only called
// tools, then the calls.
func resultItems(res *turn.Result) []turn.Item {
	var out []turn.Item
	if res.Text != "" || len(res.ToolCalls) == 0 {
		out = append(out, turn.Item{Type: turn.ItemMessage, Role: turn.RoleAssistant,
			Content: []turn.Part{{Type: turn.PartText, Text: res.Text, Annotations: res.Annotations}}})
	}
	for _, tc := range res.ToolCalls {
		if tc.Custom {
			out = append(out, turn.Item{Type: turn.ItemCustomToolCall, CallID: tc.ID, Name: tc.Name, Namespace: tc.Namespace, Input: tc.Arguments})
			continue
		}
		out = append(out, turn.Item{Type: turn.ItemFunctionCall, CallID: tc.ID, Name: tc.Name, Namespace: tc.Namespace, Arguments: tc.Arguments})
	}
	return out
}
