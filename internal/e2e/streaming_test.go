package e2e_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3/option"

	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// hold scripts the fake model to stop after its first delta ("first ")
// until the returned release is called (at the latest when the test ends).
func hold(t *testing.T, fake *fakemodel.Server) (release func()) {
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	fake.SetReply(fakemodel.Reply{Deltas: []string{"first ", "second"}, Hold: ch, Usage: codexUsage()})
	return release
}

// TestFirstChunkBeforeTurnCompletes: the client reads the model's first
// delta while the model is still holding the rest of its answer.
func TestFirstChunkBeforeTurnCompletes(t *testing.T) {
	e := startCodex(t)
	t.Run("chat", func(t *testing.T) {
		release := hold(t, e.fake)
		stream := e.client.Chat.Completions.NewStreaming(reqCtx(t), chatParams())
		defer stream.Close()
		var text strings.Builder
		for text.Len() == 0 && stream.Next() {
			if c := stream.Current(); len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Delta.Content)
			}
		}
		if text.String() != "first " {
			t.Fatalf("while the model is held the client read %q (%v), want the first delta", text.String(), stream.Err())
		}
		release()
		finish := ""
		for stream.Next() {
			if c := stream.Current(); len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Delta.Content)
				finish += c.Choices[0].FinishReason
			}
		}
		if err := stream.Err(); err != nil || text.String() != "first second" || finish != "stop" {
			t.Fatalf("after release: %q finish %q (%v)", text.String(), finish, err)
		}
	})
	t.Run("responses", func(t *testing.T) {
		release := hold(t, e.fake)
		stream := e.client.Responses.NewStreaming(reqCtx(t), responseParams())
		defer stream.Close()
		var text strings.Builder
		for text.Len() == 0 && stream.Next() {
			if ev := stream.Current(); ev.Type == "response.output_text.delta" {
				text.WriteString(ev.Delta)
			}
		}
		if text.String() != "first " {
			t.Fatalf("while the model is held the client read %q (%v), want the first delta", text.String(), stream.Err())
		}
		release()
		status := ""
		for stream.Next() {
			switch ev := stream.Current(); ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.completed":
				status = string(ev.Response.Status)
			}
		}
		if err := stream.Err(); err != nil || text.String() != "first second" || status != "completed" {
			t.Fatalf("after release: %q status %q (%v)", text.String(), status, err)
		}
	})
	t.Run("completions", func(t *testing.T) {
		release := hold(t, e.fake)
		stream := e.client.Completions.NewStreaming(reqCtx(t), completionParams())
		defer stream.Close()
		var text strings.Builder
		for text.Len() == 0 && stream.Next() {
			if c := stream.Current(); len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Text)
			}
		}
		if text.String() != "first " {
			t.Fatalf("while the model is held the client read %q (%v), want the first delta", text.String(), stream.Err())
		}
		release()
		for stream.Next() {
			if c := stream.Current(); len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Text)
			}
		}
		if err := stream.Err(); err != nil || text.String() != "first second" {
			t.Fatalf("after release: %q (%v)", text.String(), err)
		}
	})
}

// TestClientDisconnectCancelsTurn: a streaming client that goes away
// mid-answer makes the front door publish a cancel event, the worker
// interrupts the codex turn and answers 499, and the stack keeps serving.
func TestClientDisconnectCancelsTurn(t *testing.T) {
	e := startCodex(t)
	obs := observe(t, e.st)
	// firstDelta opens a stream of op and reads up to its first text delta.
	type firstDelta func(ctx context.Context, opts ...option.RequestOption) (string, func() error)
	cases := []struct {
		op   llmapi.Operation
		open firstDelta
	}{
		{llmapi.OpChatCompletions, func(ctx context.Context, opts ...option.RequestOption) (string, func() error) {
			s := e.client.Chat.Completions.NewStreaming(ctx, chatParams(), opts...)
			for s.Next() {
				if c := s.Current(); len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
					return c.Choices[0].Delta.Content, s.Close
				}
			}
			return "", s.Close
		}},
		{llmapi.OpResponses, func(ctx context.Context, opts ...option.RequestOption) (string, func() error) {
			s := e.client.Responses.NewStreaming(ctx, responseParams(), opts...)
			for s.Next() {
				if ev := s.Current(); ev.Type == "response.output_text.delta" {
					return ev.Delta, s.Close
				}
			}
			return "", s.Close
		}},
		{llmapi.OpCompletions, func(ctx context.Context, opts ...option.RequestOption) (string, func() error) {
			s := e.client.Completions.NewStreaming(ctx, completionParams(), opts...)
			for s.Next() {
				if c := s.Current(); len(c.Choices) > 0 && c.Choices[0].Text != "" {
					return c.Choices[0].Text, s.Close
				}
			}
			return "", s.Close
		}},
	}
	for _, c := range cases {
		t.Run(string(c.op), func(t *testing.T) {
			hold(t, e.fake) // not released while the client is connected
			ctx, cancel := context.WithCancel(reqCtx(t))
			defer cancel()
			var httpResp *http.Response
			first, closeStream := c.open(ctx, option.WithResponseInto(&httpResp))
			if first != "first " {
				t.Fatalf("first delta %q, want %q", first, "first ")
			}
			if httpResp == nil || httpResp.Header.Get("X-Request-Id") == "" {
				t.Fatal("no X-Request-Id on the streaming response")
			}
			id := httpResp.Header.Get("X-Request-Id")
			cancel() // the client goes away mid-answer
			_ = closeStream()

			var got llmapi.ExecutionEventCancel
			obs.wait(t, "the cancel event of "+id, func(o *observer) bool {
				for _, ev := range o.cancels {
					if ev.RequestID == id {
						got = ev
						return true
					}
				}
				return false
			})
			if got.Operation != c.op || got.Reason != llmapi.ReasonClientDisconnected {
				t.Errorf("cancel event %+v, want operation %s and reason %s", got, c.op, llmapi.ReasonClientDisconnected)
			}
			// The worker interrupted the turn: its one response says the
			// client closed the request (the model, still held, never
			// finished).
			var resp llmapi.ExecutionEventResponse
			obs.wait(t, "the response event of "+id, func(o *observer) bool {
				for _, r := range o.responses {
					if r.RequestID == id {
						resp = r
						return true
					}
				}
				return false
			})
			if resp.StatusCode != executor.StatusClientClosed || resp.Operation != c.op {
				t.Errorf("response of the cancelled request: %s status %d, body %s; want %d", resp.Operation, resp.StatusCode, resp.Body, executor.StatusClientClosed)
			}

			// The stack still serves.
			e.fake.SetReply(fakemodel.Reply{Text: "still here", Usage: codexUsage()})
			next, err := e.client.Chat.Completions.New(reqCtx(t), chatParams())
			if err != nil {
				t.Fatalf("next request: %v", err)
			}
			if len(next.Choices) != 1 || next.Choices[0].Message.Content != "still here" {
				t.Fatalf("next request answered %s", next.RawJSON())
			}
			nextID := next.ID
			// By the time the next request's response is on the bus, the
			// cancelled request still has exactly one.
			obs.wait(t, "the response of the next request", func(o *observer) bool {
				cancelled, nextSeen := 0, false
				for _, r := range o.responses {
					if r.RequestID == id {
						cancelled++
					}
					nextSeen = nextSeen || (r.StatusCode == http.StatusOK && strings.Contains(string(r.Body), nextID))
				}
				if cancelled != 1 {
					t.Errorf("%d responses for the cancelled request", cancelled)
				}
				return nextSeen
			})
		})
	}
}
