package fakemodel

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sseEvent struct {
	Event string
	Data  map[string]any
}

func post(t *testing.T, s *Server, body string) (*http.Response, []sseEvent) {
	t.Helper()
	resp, evs, err := postErr(s, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, evs
}

func postErr(s *Server, body string) (*http.Response, []sseEvent, error) {
	resp, err := http.Post(s.URL()+"/responses", "application/json", strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var evs []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.Event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.Data)
		case line == "" && cur.Event != "":
			evs = append(evs, cur)
			cur = sseEvent{}
		}
	}
	return resp, evs, sc.Err()
}

func TestStreamsTextDeltasAndUsage(t *testing.T) {
	s := New(t)
	s.SetReply(Reply{Text: "Hello there, friend", Usage: Usage{InputTokens: 7, CachedTokens: 2, OutputTokens: 3, ReasoningTokens: 1}})
	_, evs := post(t, s, `{"model":"m","stream":true,"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}]}`)
	var deltas []string
	for _, e := range evs {
		if e.Event == "response.output_text.delta" {
			deltas = append(deltas, e.Data["delta"].(string))
		}
	}
	if len(deltas) < 2 || strings.Join(deltas, "") != "Hello there, friend" {
		t.Fatalf("deltas = %q", deltas)
	}
	if evs[0].Event != "response.created" || evs[len(evs)-1].Event != "response.completed" {
		t.Fatalf("events = %v", evs)
	}
	usage := evs[len(evs)-1].Data["response"].(map[string]any)["usage"].(map[string]any)
	if usage["input_tokens"].(float64) != 7 || usage["total_tokens"].(float64) != 10 ||
		usage["input_tokens_details"].(map[string]any)["cached_tokens"].(float64) != 2 {
		t.Fatalf("usage = %v", usage)
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].LastUserText() != "hi" || reqs[0].Messages()[0].Role != "user" {
		t.Fatalf("recorded = %+v", reqs)
	}
}

func TestErrorStatusAndQueue(t *testing.T) {
	s := New(t)
	s.Enqueue(Reply{Status: 429, ErrorCode: "rate_limit_exceeded"})
	resp, _ := post(t, s, `{}`)
	if resp.StatusCode != 429 {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	_, evs := post(t, s, `{}`) // queue drained: default reply
	if len(evs) == 0 || evs[len(evs)-1].Event != "response.completed" {
		t.Fatalf("events = %v", evs)
	}
}

func TestShellCommandUsesOfferedTool(t *testing.T) {
	s := New(t)
	s.SetReply(Reply{ShellCommand: "touch x", FunctionCalls: []FunctionCall{{Name: "f", CallID: "c1", Arguments: `{}`}}})
	_, evs := post(t, s, `{"tools":[{"type":"function","name":"exec_command"}]}`)
	var names []string
	for _, e := range evs {
		if e.Event == "response.output_item.done" {
			item := e.Data["item"].(map[string]any)
			names = append(names, item["name"].(string)+" "+item["arguments"].(string))
		}
	}
	if len(names) != 2 || names[0] != "f {}" || names[1] != `exec_command {"cmd":"touch x"}` {
		t.Fatalf("calls = %q", names)
	}
}

func TestHoldBlocksUntilReleased(t *testing.T) {
	s := New(t)
	hold := make(chan struct{})
	s.SetReply(Reply{Deltas: []string{"a", "b"}, Hold: hold})
	done := make(chan []sseEvent)
	go func() {
		_, evs, _ := postErr(s, `{}`)
		done <- evs
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("stream finished while held")
	default:
	}
	close(hold)
	evs := <-done
	if len(evs) == 0 || evs[len(evs)-1].Event != "response.completed" {
		t.Fatalf("events = %v", evs)
	}
}

func TestWriteCodexHome(t *testing.T) {
	s := New(t)
	dir := s.WriteCodexHome(t, `approval_policy = "never"`)
	b, err := os.ReadFile(filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`base_url = "` + s.URL() + `"`, `wire_api = "responses"`, `approval_policy = "never"`, "request_max_retries = 0"} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("config.toml lacks %q:\n%s", want, b)
		}
	}
}
