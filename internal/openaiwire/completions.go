package openaiwire

import (
	"encoding/json"
	"math"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// completionRequest is the subset of POST /v1/completions this bridge
// reads; sampling hints and max_tokens are accepted and have no effect.
type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	Suffix        json.RawMessage `json:"suffix"`
	Echo          bool            `json:"echo"`
	Logprobs      json.RawMessage `json:"logprobs"`
	BestOf        *int            `json:"best_of"`
	N             *int            `json:"n"`
	Stop          json.RawMessage `json:"stop"`
	LogitBias     map[string]any  `json:"logit_bias"`
}

// completionNumbers are the numeric fields of a completions request,
// checked as OpenAI checks them (they have no effect on the model).
var completionNumbers = []numberRule{
	{param: "temperature", min: 0, max: 2},
	{param: "top_p", min: 0, max: 1},
	{param: "frequency_penalty", min: -2, max: 2},
	{param: "presence_penalty", min: -2, max: 2},
	{param: "seed", integer: true, min: math.MinInt64, max: math.MaxInt64},
	{param: "max_tokens", integer: true, min: 0, max: math.MaxInt32},
}

func parseCompletions(body []byte) (*Call, error) {
	var r completionRequest
	if err := decodeRequest(body, &r, &r.Model, completionNumbers); err != nil {
		return nil, err
	}
	switch {
	case r.N != nil && *r.N != 1:
		return nil, unsupported("n", "only one choice (n=1) is generated")
	case r.BestOf != nil && *r.BestOf > 1:
		return nil, unsupported("best_of", "only one completion is generated")
	case r.Echo:
		return nil, unsupported("echo", "the prompt cannot be echoed with token alignment")
	case !isNull(r.Logprobs):
		return nil, unsupported("logprobs", "the model backend does not expose token log probabilities")
	case !isNull(r.Suffix):
		return nil, unsupported("suffix", "insertion with a suffix is not available")
	case !isNull(r.Stop) && string(r.Stop) != "[]":
		return nil, unsupported("stop", "stop sequences cannot be enforced by the model backend")
	case len(r.LogitBias) > 0:
		return nil, unsupported("logit_bias", "the model backend does not take logit biases")
	}
	prompt, err := parsePrompt(r.Prompt)
	if err != nil {
		return nil, err
	}
	c, err := newStreamCall(r.Stream, r.StreamOptions)
	if err != nil {
		return nil, err
	}
	c.Request = turn.Request{
		Model:      r.Model,
		Input:      []turn.Item{{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: prompt}}}},
		ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceNone},
	}
	return c, nil
}

// parsePrompt accepts a string or a list of exactly one string.
func parsePrompt(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", llmapi.InvalidRequest("prompt", "missing_required_parameter", "prompt is required")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return "", llmapi.InvalidRequest("prompt", "invalid_type", "prompt must be a string or a list of one string")
	}
	if len(list) != 1 {
		return "", unsupported("prompt", "a list prompt must hold exactly one string (batched prompts are not available)")
	}
	if json.Unmarshal(list[0], &s) != nil {
		return "", unsupported("prompt", "token-array prompts are not available; send text")
	}
	return s, nil
}

type textCompletion = completionObject[completionChoice]

type completionChoice struct {
	Text         string          `json:"text"`
	Index        int             `json:"index"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

func (c *Call) textCompletion(m Meta, res *turn.Result) textCompletion {
	finish := string(finishOf(res))
	u := toChatUsage(res.Usage)
	return textCompletion{
		ID: m.ID, Object: "text_completion", Created: m.Created, Model: m.Model,
		Choices: []completionChoice{{Text: res.Text, Index: 0, Logprobs: jsonNull, FinishReason: &finish}},
		Usage:   &u,
	}
}

type completionStream struct {
	c    *Call
	m    Meta
	sent streamed
}

func (s *completionStream) frame(choices []completionChoice, usage *chatUsage) json.RawMessage {
	return mustJSON(textCompletion{ID: s.m.ID, Object: "text_completion", Created: s.m.Created, Model: s.m.Model, Choices: choices, Usage: usage})
}

func (s *completionStream) Delta(d turn.Delta) []json.RawMessage {
	if d.Kind != turn.DeltaText || d.Text == "" {
		return nil
	}
	s.sent.text += d.Text
	return []json.RawMessage{s.frame([]completionChoice{{Text: d.Text, Logprobs: jsonNull}}, nil)}
}

func (s *completionStream) Finish(res *turn.Result) []json.RawMessage {
	finish := string(finishOf(res))
	frames := catchUp(s, res, s.sent)
	frames = append(frames, s.frame([]completionChoice{{Text: "", Logprobs: jsonNull, FinishReason: &finish}}, nil))
	return append(frames, usageFrame(s.c, res, s.frame)...)
}

func (s *completionStream) Fail(err *llmapi.APIError) []json.RawMessage {
	return []json.RawMessage{ErrorFrame(err)}
}
