package contract_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

const group = "test-group"

func svc() contract.Service { return contract.Worker("9.9.9", group) }

func TestCapabilities(t *testing.T) {
	s := svc()
	seen := map[string]bool{}
	for _, c := range s.Capabilities {
		if seen[c.ID] {
			t.Errorf("duplicate capability id %q", c.ID)
		}
		seen[c.ID] = true
		op, kind, err := llmapi.ParseEventName(c.Event)
		if err != nil || op != c.Operation {
			t.Errorf("%s: event %q: %v", c.ID, c.Event, err)
		}
		if !strings.HasPrefix(c.ID, "codex."+c.Operation.Slug()+".") {
			t.Errorf("%s: id does not name operation %s", c.ID, c.Operation)
		}
		if c.Scope != llmapi.Scope || c.Summary == "" || c.Description == "" || !strings.HasPrefix(c.Payload, "llmapi.") {
			t.Errorf("%s: %+v", c.ID, c)
		}
		switch c.Action {
		case contract.Receive:
			if c.Delivery == "" {
				t.Errorf("%s: receive without delivery", c.ID)
			}
			if (c.Delivery == events.Unicast) != (c.Group == group) {
				t.Errorf("%s: delivery %s group %q", c.ID, c.Delivery, c.Group)
			}
			if (kind == llmapi.KindRequest) != (c.Delivery == events.Unicast) {
				t.Errorf("%s: kind %s delivery %s", c.ID, kind, c.Delivery)
			}
		case contract.Send:
			if c.Delivery != "" || c.Group != "" || (kind != llmapi.KindResponse && kind != llmapi.KindChunk) {
				t.Errorf("%s: send capability %+v", c.ID, c)
			}
		default:
			t.Errorf("%s: action %q", c.ID, c.Action)
		}
		got, ok := s.Lookup(c.ID)
		if !ok || got.ID != c.ID || got.Event != c.Event {
			t.Errorf("Lookup(%q) = %+v, %v", c.ID, got, ok)
		}
	}
	// 4 per execution operation, 2 per stored-response operation.
	if want := 4*len(llmapi.Operations()) + 2*len(llmapi.StateOperations()); len(s.Capabilities) != want {
		t.Errorf("%d capabilities, want %d", len(s.Capabilities), want)
	}
	if _, ok := s.Lookup("codex.embeddings.receive"); ok {
		t.Error("Lookup found an unknown id")
	}
}

func TestNames(t *testing.T) {
	s := svc()
	tests := []struct {
		action   contract.Action
		delivery events.Delivery
		want     []string
	}{
		{contract.Receive, events.Unicast, []string{
			"bus.llm.chat.completions.request", "bus.llm.responses.request", "bus.llm.completions.request",
			"bus.llm.responses.retrieve.request", "bus.llm.responses.delete.request", "bus.llm.responses.input_items.request",
		}},
		{contract.Receive, events.Broadcast, []string{
			"bus.llm.chat.completions.cancel", "bus.llm.responses.cancel", "bus.llm.completions.cancel",
		}},
		{contract.Send, "", []string{
			"bus.llm.chat.completions.response", "bus.llm.chat.completions.chunk",
			"bus.llm.responses.response", "bus.llm.responses.chunk",
			"bus.llm.completions.response", "bus.llm.completions.chunk",
			"bus.llm.responses.retrieve.response", "bus.llm.responses.delete.response", "bus.llm.responses.input_items.response",
		}},
	}
	for _, tc := range tests {
		got := s.Names(tc.action, tc.delivery)
		a, b := slices.Clone(got), slices.Clone(tc.want)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Errorf("Names(%s, %q) = %v, want %v", tc.action, tc.delivery, got, tc.want)
		}
	}
}

func TestRenderText(t *testing.T) {
	s := svc()
	var b bytes.Buffer
	if err := contract.Render(&b, s, "text"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "bus-integration-codex 9.9.9\n") {
		t.Errorf("header: %q", out[:min(len(out), 60)])
	}
	for _, c := range s.Capabilities {
		line := ""
		for l := range strings.SplitSeq(out, "\n") {
			if strings.HasPrefix(l, c.ID+" ") {
				line = l
			}
		}
		if line == "" || !strings.Contains(line, c.Event) || !strings.Contains(line, c.Payload) {
			t.Errorf("no line for %s / %s in\n%s", c.ID, c.Event, out)
		}
		if c.Group != "" && !strings.Contains(line, "(group "+group+")") {
			t.Errorf("line of %s lacks its group: %q", c.ID, line)
		}
	}
	if err := contract.Render(&b, s, "yaml"); err == nil || !strings.Contains(err.Error(), "text, json, asyncapi") {
		t.Errorf("unknown format: %v", err)
	}
}

func TestRenderHelp(t *testing.T) {
	s := svc()
	for _, id := range []string{"codex.chat_completions.receive", "codex.responses.cancel", "codex.completions.stream", "codex.responses_delete.respond"} {
		c, ok := s.Lookup(id)
		if !ok {
			t.Fatalf("no capability %s", id)
		}
		var b bytes.Buffer
		if err := contract.RenderHelp(&b, c); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, want := range []string{id + "\n", "event:     " + c.Event, "scope:     llm:proxy", "payload:   " + c.Payload, c.Summary} {
			if !strings.Contains(out, want) {
				t.Errorf("%s help lacks %q:\n%s", id, want, out)
			}
		}
		if (c.Group != "") != strings.Contains(out, "group:     "+group) {
			t.Errorf("%s help group line:\n%s", id, out)
		}
		for l := range strings.SplitSeq(out, "\n") {
			if len(l) > 100 {
				t.Errorf("%s help line of %d chars: %q", id, len(l), l)
			}
		}
		// Every word of the description is there, only re-wrapped.
		if strings.Join(strings.Fields(out), " ") == "" || !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(c.Description), " ")) {
			t.Errorf("%s help lacks its description", id)
		}
	}
}

func TestRenderJSON(t *testing.T) {
	s := svc()
	var b bytes.Buffer
	if err := contract.Render(&b, s, "json"); err != nil {
		t.Fatal(err)
	}
	var back contract.Service
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if back.Name != s.Name || back.Version != s.Version || back.Description != s.Description || !slices.Equal(back.Capabilities, s.Capabilities) {
		t.Errorf("round trip differs:\n%+v\n%+v", back, s)
	}
}

// resolve follows a local JSON pointer ref ("#/a/b") inside doc.
func resolve(doc map[string]any, ref string) (any, bool) {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, false
	}
	var cur any = doc
	for seg := range strings.SplitSeq(p, "/") {
		seg, _ = url.PathUnescape(seg)
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// walkRefs calls f for every "$ref" string anywhere in v.
func walkRefs(v any, path string, f func(path, ref string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && k == "$ref" {
				f(path, s)
				continue
			}
			walkRefs(val, path+"/"+k, f)
		}
	case []any:
		for i, val := range x {
			walkRefs(val, path+"/"+strconv.Itoa(i), f)
		}
	}
}

func TestAsyncAPI(t *testing.T) {
	s := svc()
	var b bytes.Buffer
	if err := contract.Render(&b, s, "asyncapi"); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if doc["asyncapi"] != "3.0.0" {
		t.Errorf("asyncapi = %v", doc["asyncapi"])
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] != "bus-integration-codex" || info["version"] != "9.9.9" {
		t.Errorf("info %v", info)
	}
	refs := 0
	walkRefs(doc, "", func(path, ref string) {
		refs++
		if _, ok := resolve(doc, ref); !ok {
			t.Errorf("%s: $ref %q does not resolve", path, ref)
		}
	})
	if refs == 0 {
		t.Fatal("no $ref in the document")
	}

	channels, _ := doc["channels"].(map[string]any)
	for name, ch := range channels {
		c, _ := ch.(map[string]any)
		if c["address"] != name {
			t.Errorf("channel %s address %v", name, c["address"])
		}
		if _, _, err := llmapi.ParseEventName(name); err != nil {
			t.Errorf("channel %s: %v", name, err)
		}
	}
	ops, _ := doc["operations"].(map[string]any)
	if len(ops) != len(s.Capabilities) {
		t.Errorf("%d operations, want %d", len(ops), len(s.Capabilities))
	}
	for _, c := range s.Capabilities {
		op, _ := ops[c.ID].(map[string]any)
		if op == nil {
			t.Errorf("no operation %s", c.ID)
			continue
		}
		if a := op["action"]; a != "send" && a != "receive" || a != string(c.Action) {
			t.Errorf("%s action %v", c.ID, a)
		}
		chRef, _ := op["channel"].(map[string]any)["$ref"].(string)
		ch, ok := resolve(doc, chRef)
		if !ok || ch.(map[string]any)["address"] != c.Event {
			t.Errorf("%s channel %q -> %v", c.ID, chRef, ch)
		}
		msgs, _ := op["messages"].([]any)
		if len(msgs) == 0 {
			t.Errorf("%s has no messages", c.ID)
		}
		for _, m := range msgs {
			ref, _ := m.(map[string]any)["$ref"].(string)
			if !strings.HasPrefix(ref, chRef+"/messages/") {
				t.Errorf("%s message %q is not a message of its channel %q", c.ID, ref, chRef)
			}
			// The operation's message resolves, through the channel, to a
			// components message whose payload is a schema.
			target, ok := resolve(doc, ref)
			if !ok {
				continue
			}
			inner, _ := target.(map[string]any)["$ref"].(string)
			cm, ok := resolve(doc, inner)
			if !ok || !strings.HasSuffix(inner, "/"+strings.TrimPrefix(c.Payload, "llmapi.")) {
				t.Errorf("%s message %q -> %q", c.ID, ref, inner)
				continue
			}
			payload, _ := cm.(map[string]any)["payload"].(map[string]any)["$ref"].(string)
			if sch, ok := resolve(doc, payload); !ok || sch.(map[string]any)["type"] != "object" {
				t.Errorf("%s payload %q does not resolve to an object schema", c.ID, payload)
			}
		}
	}
	msgs, _ := doc["components"].(map[string]any)["messages"].(map[string]any)
	for name, m := range msgs {
		ref, _ := m.(map[string]any)["payload"].(map[string]any)["$ref"].(string)
		if !strings.HasPrefix(ref, "#/components/schemas/") {
			t.Errorf("message %s payload %q", name, ref)
		}
		if _, ok := resolve(doc, ref); !ok {
			t.Errorf("message %s payload %q does not resolve", name, ref)
		}
	}
}

func TestSchemasRequireContractFields(t *testing.T) {
	want := map[string][]string{
		"ExecutionEventRequest":  {"requestId", "operation", "model", "stream", "body"},
		"ExecutionEventResponse": {"requestId", "operation", "statusCode", "body"},
		"ExecutionEventChunk":    {"requestId", "operation", "seq", "data"},
		"ExecutionEventCancel":   {"requestId", "operation"},
	}
	schemas := contract.Schemas()
	for name, fields := range want {
		s, _ := schemas[name].(map[string]any)
		req, _ := s["required"].([]any)
		props, _ := s["properties"].(map[string]any)
		for _, f := range fields {
			if !slices.Contains(req, any(f)) || props[f] == nil {
				t.Errorf("%s: %s not required/declared", name, f)
			}
		}
	}
}

// Every operation a capability declares is allowed by the payload schemas'
// operation enum.
func TestSchemasAllowDeclaredOperations(t *testing.T) {
	schemas := contract.Schemas()
	for _, c := range svc().Capabilities {
		name := strings.TrimPrefix(c.Payload, "llmapi.")
		props, _ := schemas[name].(map[string]any)["properties"].(map[string]any)
		enum, _ := props["operation"].(map[string]any)["enum"].([]any)
		if !slices.Contains(enum, any(string(c.Operation))) {
			t.Errorf("%s: operation %q not in the %s schema enum %v", c.ID, c.Operation, name, enum)
		}
	}
}
