// Package static is the deterministic execution provider used for tests,
// self-tests and stacks without Codex.
//
// The rule: the answer is "Echo: " followed by the text of the last user
// message (for a json_object format: {"echo": "<that text>"}). Usage counts
// whitespace-separated words: input tokens are the words of every
// instruction and input item (message text, function arguments and
// outputs), output tokens the words of the answer. Streaming sends the
// answer word by word ("Echo:", " hello", " world").
//
// It imports only internal/turn.
package static

import (
	"context"
	"encoding/json"
	"strings"
	"unicode"

	"github.com/busdk/bus-integration-codex/internal/turn"
)

// Provider is the static provider.
type Provider struct{}

// New returns the static provider.
func New() *Provider { return &Provider{} }

// Capabilities implements turn.Provider: no tools, images or schemas.
func (*Provider) Capabilities() turn.Capabilities { return turn.Capabilities{} }

// Close implements turn.Provider.
func (*Provider) Close() error { return nil }

// Answer returns the static answer to req.
func Answer(req *turn.Request) string {
	text := req.LastUserText()
	if req.Format != nil && req.Format.Type == "json_object" {
		b, _ := json.Marshal(map[string]string{"echo": text})
		return string(b)
	}
	return strings.TrimRight("Echo: "+text, " ")
}

// CountWords is the static provider's token count: whitespace-separated words.
func CountWords(s string) int64 { return int64(len(strings.Fields(s))) }

// InputTokens counts the words of every instruction and input item of req.
func InputTokens(req *turn.Request) int64 {
	var n int64
	for _, s := range req.Instructions {
		n += CountWords(s)
	}
	for _, it := range req.Input {
		n += CountWords(it.Text()) + CountWords(it.Arguments) + CountWords(it.Output)
	}
	return n
}

// Words splits s into streaming pieces, each a word with the whitespace
// before it, so the pieces concatenate back to s exactly.
func Words(s string) []string {
	var out []string
	start, prevSpace := 0, true
	for i, r := range s {
		space := unicode.IsSpace(r)
		// A word starts here: cut before the whitespace that precedes it.
		if !space && prevSpace && i > 0 {
			cut := strings.LastIndexFunc(s[:i], func(r rune) bool { return !unicode.IsSpace(r) }) + 1
			if cut > start {
				out = append(out, s[start:cut])
				start = cut
			}
		}
		prevSpace = space
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// Run implements turn.Provider.
func (p *Provider) Run(ctx context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
	answer := Answer(req)
	if sink != nil {
		for _, w := range Words(answer) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			sink(turn.Delta{Kind: turn.DeltaText, Text: w})
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in, out := InputTokens(req), CountWords(answer)
	return &turn.Result{
		Text:   answer,
		Finish: turn.FinishStop,
		Usage:  turn.Usage{InputTokens: in, OutputTokens: out, TotalTokens: in + out},
	}, nil
}

var _ turn.Provider = (*Provider)(nil)
