package stack_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

func TestStartServeClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := stack.Start(ctx, stack.Config{Worker: stack.On(static.New())})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !strings.HasPrefix(st.URL, "http://127.0.0.1:") || !strings.HasSuffix(st.URL, "/v1") || st.URL != st.BaseURL+"/v1" {
		t.Fatalf("URL %q, BaseURL %q", st.URL, st.BaseURL)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	hc := &http.Client{Transport: transport}

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, st.URL+"/chat/completions",
		strings.NewReader(`{"model":"codex-chatgpt","messages":[{"role":"user","content":"hi there"}]}`))
	req.Header.Set("Authorization", "Bearer "+st.Token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var c struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &c) != nil || len(c.Choices) != 1 || c.Choices[0].Message.Content != "Echo: hi there" {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}

	// A token without llm:proxy is refused by the front door.
	tok, err := st.IssueToken("nobody")
	if err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, st.URL+"/chat/completions", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("token without scope: status %d", resp.StatusCode)
	}

	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := hc.Get(st.BaseURL + "/healthz"); err == nil {
		t.Fatal("the front door still answers after Close")
	}
}

func TestWorkerNeedsExecutor(t *testing.T) {
	if _, err := stack.Start(context.Background(), stack.Config{Worker: &stack.WorkerConfig{}}); err == nil {
		t.Fatal("Start with a worker without executor succeeded")
	}
}

// A Start that cannot finish (its context is already over) stops what it
// started and closes the provider it was given.
func TestStartFailureClosesProvider(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := &closeRecorder{Provider: static.New()}
	if _, err := stack.Start(ctx, stack.Config{Worker: stack.On(p)}); err == nil {
		t.Fatal("Start with an ended context succeeded")
	}
	if !p.closed {
		t.Fatal("the provider was not closed")
	}
}

type closeRecorder struct {
	*static.Provider
	closed bool
}

func (c *closeRecorder) Close() error {
	c.closed = true
	return c.Provider.Close()
}

// TestCallerTokenIsNoService: the stack's caller token is good at the
// front door only; on the Events API it is refused bus.llm.* traffic,
// while the stack's own service clients are served.
func TestCallerTokenIsNoService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := stack.Start(ctx, stack.Config{Worker: stack.On(static.New())})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	caller, err := events.NewClient(st.Bus.URL, events.WithToken(st.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer caller.CloseIdleConnections()
	name := llmapi.OpChatCompletions.ResponseEvent()
	_, err = caller.PublishJSON(ctx, name, "forged", map[string]any{})
	if apiErr, ok := errors.AsType[*events.APIError](err); !ok || apiErr.Status != http.StatusForbidden {
		t.Fatalf("the caller token publishing %s: %v, want 403", name, err)
	}
	svc, err := st.ServiceClient("test-service")
	if err != nil {
		t.Fatal(err)
	}
	acc, err := svc.PublishJSON(ctx, llmapi.OpChatCompletions.RequestEvent(), "probe", map[string]any{})
	if err != nil || acc.Groups == nil || *acc.Groups != 1 {
		t.Fatalf("a service publishing a request: %+v %v, want it accepted by the worker's one group", acc, err)
	}
}
