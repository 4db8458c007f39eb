package agents_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// post sends a raw Responses API request as identity sub and returns the
// status and body (the whole SSE text when streaming).
func (b *bridge) post(t *testing.T, sub string, body any) (int, []byte) {
	t.Helper()
	tok, err := b.st.IssueToken(sub, llmapi.Scope)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, b.st.URL+"/responses", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// A namespace tool round trip on the real codex binary: the namespace
// reaches the model as one, the call comes back with its namespace, and
// its output continues the conversation.
func TestNamespaceToolRoundTrip(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")
	tools := []any{map[string]any{"type": "namespace", "name": "weather", "description": "Weather tools.", "tools": []any{
		map[string]any{"type": "function", "name": "get", "description": "Current weather", "parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}}},
	}}}
	b.fake.Enqueue(
		fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Namespace: "weather", Name: "get", CallID: "call_w", Arguments: `{"city":"Oslo"}`}}},
		fakemodel.Reply{Text: "Oslo is rainy."},
	)
	status, body := b.post(t, "alice", map[string]any{"model": model, "input": "weather in Oslo?", "tools": tools})
	var first struct {
		ID     string `json:"id"`
		Output []struct {
			Type      string `json:"type"`
			CallID    string `json:"call_id"`
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"output"`
	}
	if status != 200 || json.Unmarshal(body, &first) != nil {
		t.Fatalf("%d %s", status, body)
	}
	if len(first.Output) != 1 || first.Output[0].Type != "function_call" || first.Output[0].Namespace != "weather" || first.Output[0].Name != "get" || first.Output[0].CallID != "call_w" {
		t.Fatalf("output %s", body)
	}
	if ns := b.fake.Requests()[0].ToolOfType("namespace"); ns == nil || ns["name"] != "weather" {
		t.Fatalf("the model was not offered the namespace: %s", b.fake.Requests()[0].Body)
	}
	status, body = b.post(t, "alice", map[string]any{"model": model, "previous_response_id": first.ID, "tools": tools,
		"input": []any{map[string]any{"type": "function_call_output", "call_id": "call_w", "output": "rainy"}}})
	if status != 200 || !bytes.Contains(body, []byte("Oslo is rainy.")) {
		t.Fatalf("%d %s", status, body)
	}
	outs := b.fake.Requests()[1].ItemsOfType("function_call_output")
	if len(outs) != 1 || outs[0]["output"] != "rainy" {
		t.Fatalf("the model saw outputs %v", outs)
	}
}

// A hosted web_search request runs Codex's own web search: the answer has
// the web_search_call items and the citation, plain and streaming.
func TestHostedWebSearch(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")
	const text = "Helsinki is 5C today, says Example."
	reply := fakemodel.Reply{
		WebSearches: []fakemodel.WebSearch{{Query: "weather Helsinki"}},
		Text:        text,
		Annotations: []fakemodel.Citation{{Start: 27, End: 34, URL: "https://example.com/weather", Title: "Example Weather"}},
	}
	b.fake.SetReply(reply)
	req := map[string]any{"model": model, "input": "weather in Helsinki?", "tools": []any{map[string]any{"type": "web_search"}}}
	status, body := b.post(t, "alice", req)
	var resp struct {
		Output []struct {
			Type    string          `json:"type"`
			Status  string          `json:"status"`
			Action  json.RawMessage `json:"action"`
			Text    string          `json:"-"`
			Content []struct {
				Text        string `json:"text"`
				Annotations []struct {
					Type       string `json:"type"`
					URL        string `json:"url"`
					StartIndex int    `json:"start_index"`
					EndIndex   int    `json:"end_index"`
				} `json:"annotations"`
			} `json:"content"`
		} `json:"output"`
	}
	if status != 200 || json.Unmarshal(body, &resp) != nil || len(resp.Output) != 2 {
		t.Fatalf("%d %s", status, body)
	}
	ws, msg := resp.Output[0], resp.Output[1]
	if ws.Type != "web_search_call" || ws.Status != "completed" || !bytes.Contains(ws.Action, []byte(`"query":"weather Helsinki"`)) {
		t.Fatalf("web search item %s", body)
	}
	if msg.Type != "message" || len(msg.Content) != 1 || msg.Content[0].Text != text || len(msg.Content[0].Annotations) != 1 ||
		msg.Content[0].Annotations[0].URL != "https://example.com/weather" || msg.Content[0].Annotations[0].EndIndex != 34 {
		t.Fatalf("message %s", body)
	}
	if b.fake.Requests()[0].ToolOfType("web_search") == nil {
		t.Fatal("the model was not offered web search")
	}

	req["stream"] = true
	status, body = b.post(t, "alice", req)
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, ev)
		}
	}
	joined := strings.Join(events, ",")
	for _, want := range []string{"response.web_search_call.in_progress", "response.web_search_call.searching", "response.web_search_call.completed",
		"response.output_text.annotation.added", "response.completed"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("stream lacks %s: %s", want, joined)
		}
	}
	if strings.Index(joined, "response.web_search_call.completed") > strings.Index(joined, "response.output_text.delta") {
		t.Fatalf("the search completes after the answer text began: %s", joined)
	}
}
