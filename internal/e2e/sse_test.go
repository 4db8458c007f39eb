package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// The streams checked frame by frame against the OpenAI wire format with a
// plain HTTP client.

func TestSSEWireFormatStatic(t *testing.T) { runSSE(t, startStatic(t)) }

func TestSSEWireFormatCodex(t *testing.T) { runSSE(t, startCodex(t)) }

func runSSE(t *testing.T, e *env) {
	t.Run("chat", func(t *testing.T) { sseChat(t, e, false) })
	t.Run("chat/include_usage", func(t *testing.T) { sseChat(t, e, true) })
	t.Run("completions", func(t *testing.T) { sseCompletions(t, e) })
	t.Run("responses", func(t *testing.T) { sseResponses(t, e) })
}

// stream posts a streaming request and returns its frames.
func (e *env) stream(t *testing.T, path, body string) []sseEvent {
	t.Helper()
	resp := e.post(t, reqCtx(t), path, body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q", ct)
	}
	frames := readSSE(t, resp.Body)
	if len(frames) == 0 {
		t.Fatal("empty stream")
	}
	return frames
}

// checkDone checks that a chat or text completion stream ends with exactly
// one "data: [DONE]" and has no "event:" lines, and returns the JSON frames.
func checkDone(t *testing.T, frames []sseEvent) []map[string]json.RawMessage {
	t.Helper()
	var out []map[string]json.RawMessage
	for i, f := range frames {
		if f.event != "" {
			t.Errorf("frame %d has an event line %q", i, f.event)
		}
		if f.data == "[DONE]" {
			if i != len(frames)-1 {
				t.Fatalf("[DONE] is frame %d of %d", i, len(frames))
			}
			return out
		}
		out = append(out, decode(t, f.data))
	}
	t.Fatalf("the stream does not end with data: [DONE] (last frame %q)", frames[len(frames)-1].data)
	return nil
}

// checkUsage checks a usage object of chat or text completions.
func checkUsage(t *testing.T, raw json.RawMessage, want usage) {
	t.Helper()
	var u struct {
		Prompt     int64 `json:"prompt_tokens"`
		Completion int64 `json:"completion_tokens"`
		Total      int64 `json:"total_tokens"`
		Prompt2    struct {
			Cached int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		Completion2 struct {
			Reasoning int64 `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
	}
	if err := json.Unmarshal(raw, &u); err != nil {
		t.Fatalf("usage %s: %v", raw, err)
	}
	got := usage{u.Prompt, u.Completion, u.Total, u.Prompt2.Cached, u.Completion2.Reasoning}
	if got != want {
		t.Errorf("usage %s, want %+v", raw, want)
	}
}

type chunkChoice struct {
	Index int `json:"index"`
	Delta struct {
		Role    *string `json:"role"`
		Content *string `json:"content"`
	} `json:"delta"`
	Text         string  `json:"text"`
	FinishReason *string `json:"finish_reason"`
}

func choices(t *testing.T, m map[string]json.RawMessage) []chunkChoice {
	t.Helper()
	raw, ok := m["choices"]
	if !ok {
		t.Fatalf("chunk without choices: %v", m)
	}
	var cs []chunkChoice
	if err := json.Unmarshal(raw, &cs); err != nil || cs == nil {
		t.Fatalf("choices %s is not an array", raw)
	}
	return cs
}

func sseChat(t *testing.T, e *env, includeUsage bool) {
	body := fmt.Sprintf(`{"model":%q,"stream":true,"messages":[{"role":"user","content":%q}]}`, model, prompt)
	if includeUsage {
		body = strings.Replace(body, `"stream":true`, `"stream":true,"stream_options":{"include_usage":true}`, 1)
	}
	chunks := checkDone(t, e.stream(t, "/chat/completions", body))
	var (
		content  strings.Builder
		finishAt = -1
		usageAt  = -1
	)
	for i, c := range chunks {
		if str(c, "object") != "chat.completion.chunk" || str(c, "model") != model || str(c, "id") == "" || str(c, "id") != str(chunks[0], "id") {
			t.Errorf("chunk %d: object %q model %q id %q", i, str(c, "object"), str(c, "model"), str(c, "id"))
		}
		cs := choices(t, c)
		u, hasUsage := c["usage"]
		switch {
		case includeUsage && len(cs) == 0:
			if usageAt >= 0 || !hasUsage || isJSONNull(u) {
				t.Fatalf("chunk %d: a second usage chunk or no usage: %v", i, c)
			}
			usageAt = i
			checkUsage(t, u, e.usage)
			continue
		case includeUsage:
			if !hasUsage || !isJSONNull(u) {
				t.Errorf(`chunk %d: want "usage": null on content chunks, got %s (present %v)`, i, u, hasUsage)
			}
		case hasUsage:
			t.Errorf("chunk %d: usage %s without stream_options.include_usage", i, u)
		}
		if len(cs) != 1 || cs[0].Index != 0 {
			t.Fatalf("chunk %d: choices %s", i, c["choices"])
		}
		ch := cs[0]
		if i == 0 && (ch.Delta.Role == nil || *ch.Delta.Role != "assistant") {
			t.Errorf("first delta %s has no role assistant", c["choices"])
		}
		if ch.Delta.Content != nil {
			content.WriteString(*ch.Delta.Content)
		}
		if ch.FinishReason != nil {
			if finishAt >= 0 {
				t.Errorf("chunk %d: a second finish_reason", i)
			}
			finishAt = i
			if *ch.FinishReason != "stop" {
				t.Errorf("finish_reason %q", *ch.FinishReason)
			}
		} else if finishAt >= 0 {
			t.Errorf("chunk %d after the finish_reason chunk", i)
		}
	}
	if content.String() != e.want {
		t.Errorf("content %q, want %q", content.String(), e.want)
	}
	wantFinish, wantUsage := len(chunks)-1, -1
	if includeUsage {
		wantFinish, wantUsage = len(chunks)-2, len(chunks)-1
	}
	if finishAt != wantFinish || usageAt != wantUsage {
		t.Errorf("finish_reason in chunk %d, usage in chunk %d of %d; want %d and %d", finishAt, usageAt, len(chunks), wantFinish, wantUsage)
	}
}

func sseCompletions(t *testing.T, e *env) {
	body := fmt.Sprintf(`{"model":%q,"stream":true,"prompt":%q}`, model, prompt)
	chunks := checkDone(t, e.stream(t, "/completions", body))
	var text strings.Builder
	finishAt := -1
	for i, c := range chunks {
		if str(c, "object") != "text_completion" || str(c, "model") != model || str(c, "id") == "" {
			t.Errorf("chunk %d: object %q model %q id %q", i, str(c, "object"), str(c, "model"), str(c, "id"))
		}
		cs := choices(t, c)
		if len(cs) != 1 {
			t.Fatalf("chunk %d: choices %s", i, c["choices"])
		}
		text.WriteString(cs[0].Text)
		if cs[0].FinishReason != nil {
			finishAt = i
			if *cs[0].FinishReason != "stop" {
				t.Errorf("finish_reason %q", *cs[0].FinishReason)
			}
		}
	}
	if text.String() != e.want {
		t.Errorf("text %q, want %q", text.String(), e.want)
	}
	if finishAt != len(chunks)-1 {
		t.Errorf("finish_reason in chunk %d of %d, want the last", finishAt, len(chunks))
	}
}

func sseResponses(t *testing.T, e *env) {
	body := fmt.Sprintf(`{"model":%q,"stream":true,"input":%q}`, model, prompt)
	frames := e.stream(t, "/responses", body)
	var (
		types   []string
		text    strings.Builder
		lastSeq int64 = -1
	)
	for i, f := range frames {
		if f.data == "[DONE]" {
			t.Fatalf("frame %d: the Responses API stream has no [DONE]", i)
		}
		m := decode(t, f.data)
		typ := str(m, "type")
		if f.event == "" || f.event != typ {
			t.Errorf("frame %d: event %q, data type %q", i, f.event, typ)
		}
		var seq *int64
		if err := json.Unmarshal(m["sequence_number"], &seq); err != nil || seq == nil {
			t.Fatalf("frame %d (%s): no sequence_number", i, typ)
		}
		if *seq <= lastSeq {
			t.Errorf("frame %d (%s): sequence_number %d after %d", i, typ, *seq, lastSeq)
		}
		lastSeq = *seq
		if n := len(types); n == 0 || types[n-1] != typ || typ != "response.output_text.delta" {
			types = append(types, typ)
		}
		switch typ {
		case "response.output_text.delta":
			text.WriteString(str(m, "delta"))
		case "response.completed":
			var r struct {
				Object string          `json:"object"`
				Status string          `json:"status"`
				Model  string          `json:"model"`
				Usage  json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal(m["response"], &r); err != nil {
				t.Fatalf("response.completed: %v", err)
			}
			if r.Object != "response" || r.Status != "completed" || r.Model != model {
				t.Errorf("response.completed: %s", m["response"])
			}
			var u struct {
				Input    int64 `json:"input_tokens"`
				Output   int64 `json:"output_tokens"`
				Total    int64 `json:"total_tokens"`
				InputDet struct {
					Cached int64 `json:"cached_tokens"`
				} `json:"input_tokens_details"`
				OutputDet struct {
					Reasoning int64 `json:"reasoning_tokens"`
				} `json:"output_tokens_details"`
			}
			if err := json.Unmarshal(r.Usage, &u); err != nil {
				t.Fatalf("response.completed usage %s: %v", r.Usage, err)
			}
			if got := (usage{u.Input, u.Output, u.Total, u.InputDet.Cached, u.OutputDet.Reasoning}); got != e.usage {
				t.Errorf("response.completed usage %s, want %+v", r.Usage, e.usage)
			}
		}
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Errorf("event types (deltas collapsed)\n got %v\nwant %v", types, want)
	}
	if text.String() != e.want {
		t.Errorf("deltas %q, want %q", text.String(), e.want)
	}
}
