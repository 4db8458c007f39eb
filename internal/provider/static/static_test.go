package static_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/turn"
)

func user(s string) turn.Item {
	return turn.Item{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: s}}}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name   string
		req    turn.Request
		answer string
		words  []string
		in     int64
	}{
		{
			name:   "echo of the last user message",
			req:    turn.Request{Input: []turn.Item{user("first one"), {Type: turn.ItemMessage, Role: turn.RoleAssistant, Content: []turn.Part{{Type: turn.PartText, Text: "reply"}}}, user("hello world")}},
			answer: "Echo: hello world", words: []string{"Echo:", " hello", " world"}, in: 5,
		},
		{
			name:   "no user message",
			req:    turn.Request{Instructions: []string{"be brief now"}},
			answer: "Echo:", words: []string{"Echo:"}, in: 3,
		},
		{
			name: "text parts are joined, images ignored",
			req: turn.Request{Input: []turn.Item{{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{
				{Type: turn.PartText, Text: "look "}, {Type: turn.PartImage, ImageURL: "https://example.com/a.png"}, {Type: turn.PartText, Text: "here"},
			}}}},
			answer: "Echo: look here", words: []string{"Echo:", " look", " here"}, in: 2,
		},
		{
			name: "json_object format",
			req: turn.Request{Format: &turn.OutputFormat{Type: "json_object"}, Input: []turn.Item{
				user("say \"hi\""),
			}},
			answer: `{"echo":"say \"hi\""}`, words: []string{`{"echo":"say`, ` \"hi\""}`}, in: 2,
		},
		{
			name: "input tokens count instructions, arguments and outputs",
			req: turn.Request{Instructions: []string{"a b", "c"}, Input: []turn.Item{
				user("one two three"),
				{Type: turn.ItemFunctionCall, CallID: "c1", Name: "f", Arguments: `{"x": 1}`},
				{Type: turn.ItemFunctionCallOutput, CallID: "c1", Output: "forty two"},
			}},
			answer: "Echo: one two three", words: []string{"Echo:", " one", " two", " three"}, in: 3 + 3 + 2 + 2,
		},
	}
	p := static.New()
	if caps := p.Capabilities(); caps != (turn.Capabilities{}) {
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
			res, err := p.Run(context.Background(), &tc.req, func(d turn.Delta) {
				if d.Kind != turn.DeltaText {
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
			want := turn.Result{Text: tc.answer, Finish: turn.FinishStop, Usage: turn.Usage{InputTokens: tc.in, OutputTokens: out, TotalTokens: tc.in + out}}
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
	req := &turn.Request{Input: []turn.Item{user("x y")}}
	for _, sink := range []turn.Sink{nil, func(turn.Delta) { t.Error("delta after cancellation") }} {
		if _, err := p.Run(ctx, req, sink); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	}
	// Cancelled mid-stream: no more deltas after the one that saw it.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	n := 0
	_, err := p.Run(ctx, &turn.Request{Input: []turn.Item{user("a b c d")}}, func(turn.Delta) { n++; cancel() })
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
	res, err := p.Run(context.Background(), &turn.Request{Input: []turn.Item{user("two  spaces\nand a line")}}, func(d turn.Delta) { b.WriteString(d.Text) })
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != res.Text {
		t.Errorf("streamed %q, result %q", b.String(), res.Text)
	}
}
