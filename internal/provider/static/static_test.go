package static_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/llm"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
)

func user(s string) llm.Item {
	return llm.Item{Type: llm.ItemMessage, Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartText, Text: s}}}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name   string
		req    llm.Request
		answer string
		words  []string
		in     int64
	}{
		{
			name:   "echo of the last user message",
			req:    llm.Request{Input: []llm.Item{user("first one"), {Type: llm.ItemMessage, Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "reply"}}}, user("hello world")}},
			answer: "Echo: hello world", words: []string{"Echo:", " hello", " world"}, in: 5,
		},
		{
			name:   "no user message",
			req:    llm.Request{Instructions: []string{"be brief now"}},
			answer: "Echo:", words: []string{"Echo:"}, in: 3,
		},
		{
			name: "text parts are joined, images ignored",
			req: llm.Request{Input: []llm.Item{{Type: llm.ItemMessage, Role: llm.RoleUser, Content: []llm.Part{
				{Type: llm.PartText, Text: "look "}, {Type: llm.PartImage, ImageURL: "https://example.com/a.png"}, {Type: llm.PartText, Text: "here"},
			}}}},
			answer: "Echo: look here", words: []string{"Echo:", " look", " here"}, in: 2,
		},
		{
			name: "json_object format",
			req: llm.Request{Format: &llm.OutputFormat{Type: "json_object"}, Input: []llm.Item{
				user("say \"hi\""),
			}},
			answer: `{"echo":"say \"hi\""}`, words: []string{`{"echo":"say`, ` \"hi\""}`}, in: 2,
		},
		{
			name: "input tokens count instructions, arguments and outputs",
			req: llm.Request{Instructions: []string{"a b", "c"}, Input: []llm.Item{
				user("one two three"),
				{Type: llm.ItemFunctionCall, CallID: "c1", Name: "f", Arguments: `{"x": 1}`},
				{Type: llm.ItemFunctionCallOutput, CallID: "c1", Output: "forty two"},
			}},
			answer: "Echo: one two three", words: []string{"Echo:", " one", " two", " three"}, in: 3 + 3 + 2 + 2,
		},
	}
	p := static.New()
	if caps := p.Capabilities(); caps != (llm.Capabilities{}) {
		t.Errorf("capabilities %+v", caps)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := static.Answer(&tc.req); got != tc.answer {
				t.Errorf("Answer = %q, want %q", got, tc.answer)
			}
			if tc.req.Format != nil {
				var v map[string]string
				if err := json.Unmarshal([]byte(tc.answer), &v); err != nil || len(v) != 1 {
					t.Errorf("json_object answer %q: %v", tc.answer, err)
				}
			}
			var got []string
			res, err := p.Run(context.Background(), &tc.req, func(d llm.Delta) {
				if d.Kind != llm.DeltaText {
					t.Errorf("delta kind %v", d.Kind)
				}
				got = append(got, d.Text)
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.words) || strings.Join(got, "") != res.Text {
				t.Errorf("streamed %q, want %q (answer %q)", got, tc.words, res.Text)
			}
			out := int64(len(tc.words))
			want := llm.Result{Text: tc.answer, Finish: llm.FinishStop, Usage: llm.Usage{InputTokens: tc.in, OutputTokens: out, TotalTokens: tc.in + out}}
			if res.Text != want.Text || res.Finish != want.Finish || res.Usage != want.Usage || len(res.ToolCalls) != 0 {
				t.Errorf("result %+v, want %+v", *res, want)
			}
			// Without a sink the result is the same.
			res2, err := p.Run(context.Background(), &tc.req, nil)
			if err != nil || res2.Text != res.Text || res2.Usage != res.Usage {
				t.Errorf("without sink: %+v, %v", res2, err)
			}
		})
	}
}

func TestHelpers(t *testing.T) {
	for s, n := range map[string]int64{"": 0, "  ": 0, "a": 1, " a  b\tc\nd ": 4} {
		if got := static.CountWords(s); got != n {
			t.Errorf("CountWords(%q) = %d, want %d", s, got, n)
		}
	}
	if got := static.Words("Echo: a b"); !slices.Equal(got, []string{"Echo:", " a", " b"}) {
		t.Errorf("Words = %q", got)
	}
	if got := static.Words(""); len(got) != 0 {
		t.Errorf("Words(\"\") = %q", got)
	}
}

func TestCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := static.New()
	req := &llm.Request{Input: []llm.Item{user("x y")}}
	for _, sink := range []llm.Sink{nil, func(llm.Delta) { t.Error("delta after cancellation") }} {
		if _, err := p.Run(ctx, req, sink); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	}
	// Cancelled mid-stream: no more deltas after the one that saw it.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	n := 0
	_, err := p.Run(ctx, &llm.Request{Input: []llm.Item{user("a b c d")}}, func(llm.Delta) { n++; cancel() })
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Errorf("err %v after %d deltas", err, n)
	}
	if err := p.Close(); err != nil {
		t.Error(err)
	}
}

// The streamed words and the final text differ when the last user message
// has runs of whitespace: "a  b" streams as "Echo: a b" but the result text
// is "Echo: a  b".
func TestStreamedTextEqualsResult(t *testing.T) {
	p := static.New()
	var b strings.Builder
	res, err := p.Run(context.Background(), &llm.Request{Input: []llm.Item{user("two  spaces\nand a line")}}, func(d llm.Delta) { b.WriteString(d.Text) })
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != res.Text {
		t.Errorf("streamed %q, result %q", b.String(), res.Text)
	}
}
