package openaiwire

import (
	"encoding/json"
	"fmt"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// itemPrefix is the id prefix of an item type, as OpenAI's.
func itemPrefix(t turn.ItemType) string {
	switch t {
	case turn.ItemMessage:
		return "msg"
	case turn.ItemFunctionCall:
		return "fc"
	case turn.ItemFunctionCallOutput:
		return "fco"
	case turn.ItemCustomToolCall:
		return "ctc"
	case turn.ItemCustomToolCallOutput:
		return "ctco"
	case turn.ItemWebSearchCall:
		return "ws"
	}
	return "item"
}

// AssignItemIDs gives every item without an id a fresh id of the response
// responseID (NewItemID), so the stored items can be listed and referred
// to. Items that came with an id keep it.
func AssignItemIDs(items []turn.Item, responseID string) {
	for i := range items {
		if items[i].ID == "" {
			items[i].ID = NewItemID(itemPrefix(items[i].Type), responseID)
		}
	}
}

type inputContent struct {
	Type        string            `json:"type"`
	Text        *string           `json:"text,omitempty"`
	Annotations []json.RawMessage `json:"annotations,omitempty"`
	ImageURL    string            `json:"image_url,omitempty"`
	Detail      string            `json:"detail,omitempty"`
}

type listedMessage struct {
	Type    string         `json:"type"`
	ID      string         `json:"id"`
	Status  string         `json:"status"`
	Role    string         `json:"role"`
	Content []inputContent `json:"content"`
}

type listedOutput struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	CallID string `json:"call_id"`
	Output string `json:"output"`
	Status string `json:"status,omitempty"`
}

// ItemJSON renders a stored item as a Responses API item: user and
// developer messages with input_text/input_image parts, assistant
// messages with output_text parts (and their annotations), function and
// custom tool calls and outputs, web search calls.
func ItemJSON(it turn.Item) json.RawMessage {
	switch it.Type {
	case turn.ItemMessage:
		m := listedMessage{Type: "message", ID: it.ID, Status: "completed", Role: string(it.Role), Content: []inputContent{}}
		for _, p := range it.Content {
			switch {
			case p.Type == turn.PartImage:
				m.Content = append(m.Content, inputContent{Type: "input_image", ImageURL: p.ImageURL, Detail: "auto"})
			case it.Role == turn.RoleAssistant:
				m.Content = append(m.Content, inputContent{Type: "output_text", Text: &p.Text, Annotations: annotationsOf(p.Annotations)})
			default:
				m.Content = append(m.Content, inputContent{Type: "input_text", Text: &p.Text})
			}
		}
		return mustJSON(m)
	case turn.ItemFunctionCall:
		return mustJSON(functionCallItem{Type: string(it.Type), ID: it.ID, CallID: it.CallID, Name: it.Name, Namespace: it.Namespace, Arguments: it.Arguments, Status: "completed"})
	case turn.ItemCustomToolCall:
		return mustJSON(customCallItem{Type: string(it.Type), ID: it.ID, CallID: it.CallID, Name: it.Name, Namespace: it.Namespace, Input: it.Input, Status: "completed"})
	case turn.ItemFunctionCallOutput:
		return mustJSON(listedOutput{Type: string(it.Type), ID: it.ID, CallID: it.CallID, Output: it.Output, Status: "completed"})
	case turn.ItemCustomToolCallOutput:
		return mustJSON(listedOutput{Type: string(it.Type), ID: it.ID, CallID: it.CallID, Output: it.Output})
	case turn.ItemWebSearchCall:
		return mustJSON(webSearchItem{Type: string(it.Type), ID: it.ID, Status: "completed", Action: searchAction(it.Action)})
	}
	return mustJSON(map[string]string{"type": string(it.Type), "id": it.ID})
}

// itemList is OpenAI's list object.
type itemList struct {
	Object  string            `json:"object"`
	Data    []json.RawMessage `json:"data"`
	FirstID *string           `json:"first_id"`
	LastID  *string           `json:"last_id"`
	HasMore bool              `json:"has_more"`
}

// ListItems returns one page of items (a stored response's input items,
// oldest first) as OpenAI's list object, paged by q: in q's order, after
// or before the item q names, at most q.PageSize() items. A cursor that
// names no item of the list is a 400 naming the parameter.
func ListItems(items []turn.Item, q llmapi.InputItemsRequest) (json.RawMessage, error) {
	ordered := make([]turn.Item, len(items))
	for i, it := range items {
		if q.Ascending() {
			ordered[i] = it
		} else {
			ordered[len(items)-1-i] = it
		}
	}
	find := func(param, id string) (int, error) {
		for i, it := range ordered {
			if it.ID == id {
				return i, nil
			}
		}
		return 0, llmapi.InvalidRequest(param, "invalid_value", fmt.Sprintf("No input item with id '%s' in this response.", id))
	}
	from, to := 0, len(ordered) // the window the page is cut from
	if q.After != "" {
		i, err := find("after", q.After)
		if err != nil {
			return nil, err
		}
		from = i + 1
	}
	if q.Before != "" {
		i, err := find("before", q.Before)
		if err != nil {
			return nil, err
		}
		to = i
	}
	n := q.PageSize()
	var page []turn.Item
	hasMore := false
	if q.Before != "" {
		// The page ends just before the cursor; more remain before it.
		start := max(from, to-n)
		page, hasMore = ordered[start:to], start > from
	} else {
		end := min(to, from+n)
		page, hasMore = ordered[from:end], end < to
	}
	list := itemList{Object: "list", Data: make([]json.RawMessage, 0, len(page)), HasMore: hasMore}
	for _, it := range page {
		list.Data = append(list.Data, ItemJSON(it))
	}
	if len(page) > 0 {
		first, last := page[0].ID, page[len(page)-1].ID
		list.FirstID, list.LastID = &first, &last
	}
	return mustJSON(list), nil
}
