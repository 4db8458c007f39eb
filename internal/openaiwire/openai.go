// Package openaiwire converts the OpenAI wire formats of the three execution
// APIs (chat completions, Responses, legacy completions) to and from the
// provider-neutral llm types, as pure functions: parse a request body into
// an turn.Request, build the final response object from an turn.Result, and
// encode streaming deltas as the exact OpenAI stream frames. Transport (the
// bus, HTTP) and the engine (Codex) live elsewhere.
//
// It imports only internal/turn and pkg/llmapi (pure conversions: no I/O, no transport).
package openaiwire

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Meta identifies one response object.
type Meta struct {
	// ID of the response object ("chatcmpl-…", "cmpl-…", "resp_…").
	ID string
	// Created is the Unix time of creation.
	Created int64
	// Model is the model id echoed to the client (the one it asked for).
	Model string
}

// Call is one parsed request of any operation, with what the response
// must echo back.
type Call struct {
	// Op is the operation.
	Op llmapi.Operation
	// Request is the neutral turn to run.
	Request turn.Request
	// Stream is true when the client asked for SSE.
	Stream bool
	// IncludeUsage is stream_options.include_usage.
	IncludeUsage bool
	// Responses holds the Responses API fields a response object echoes;
	// nil for other operations.
	Responses *ResponsesEcho
	// refs are the positions in Request.Input of item_reference
	// placeholders, until ResolveReferences replaces them.
	refs []int
	// extraTools are the tools of additional_tools input items.
	extraTools []extraTools
	// webSearchParam names the request field that asked for web search,
	// webSearchName the hosted tool's type.
	webSearchParam, webSearchName string
	// ids of output items by item key (see itemID), shared by the stream
	// and the final object so they match; order is the output order the
	// stream gave them (keys), which the final object follows.
	ids   map[string]string
	order []string
}

// Parse parses body as a request of op. Errors are *llmapi.APIError 400s
// naming the offending parameter. caps rejects features the provider cannot
// honour instead of ignoring them.
func Parse(op llmapi.Operation, body []byte, caps turn.Capabilities) (*Call, error) {
	var (
		c   *Call
		err error
	)
	switch op {
	case llmapi.OpChatCompletions:
		c, err = parseChat(body, caps)
	case llmapi.OpResponses:
		c, err = parseResponses(body, caps)
	case llmapi.OpCompletions:
		c, err = parseCompletions(body)
	default:
		return nil, llmapi.InvalidRequest("", "unsupported_operation", fmt.Sprintf("unknown operation %q", op))
	}
	if err != nil {
		return nil, err
	}
	c.Op = op
	return c, nil
}

// NewMeta returns a Meta with a fresh id of the right prefix for op.
func NewMeta(op llmapi.Operation, model string, created int64) Meta {
	prefix := map[llmapi.Operation]string{
		llmapi.OpChatCompletions: "chatcmpl-",
		llmapi.OpResponses:       "resp_",
		llmapi.OpCompletions:     "cmpl-",
	}[op]
	return Meta{ID: prefix + randomID(24), Created: created, Model: model}
}

// Build returns the final OpenAI response object for res.
func (c *Call) Build(m Meta, res *turn.Result) json.RawMessage {
	switch c.Op {
	case llmapi.OpChatCompletions:
		return mustJSON(c.chatCompletion(m, res))
	case llmapi.OpResponses:
		return mustJSON(c.responseObject(m, res, "completed"))
	default:
		return mustJSON(c.textCompletion(m, res))
	}
}

// Stream encodes a streaming answer as OpenAI frames.
type Stream interface {
	// Delta returns the frames for one delta (possibly none).
	Delta(d turn.Delta) []json.RawMessage
	// Finish returns the closing frames, the last one terminal.
	Finish(res *turn.Result) []json.RawMessage
	// Fail returns a terminal error frame (after which nothing follows).
	Fail(err *llmapi.APIError) []json.RawMessage
}

// NewStream returns the frame encoder for a streaming answer.
func (c *Call) NewStream(m Meta) Stream {
	switch c.Op {
	case llmapi.OpChatCompletions:
		return &chatStream{c: c, m: m}
	case llmapi.OpResponses:
		return &responsesStream{c: c, m: m, items: map[string]*streamItem{}}
	default:
		return &completionStream{c: c, m: m}
	}
}

// ErrorFrame is the frame of an error in a chat or completions stream.
func ErrorFrame(err *llmapi.APIError) json.RawMessage { return err.JSON() }

// Item keys name the output items of a call: the message, tool call i,
// web search i.
const keyMessage = "msg"

func keyCall(i int) string   { return "call:" + strconv.Itoa(i) }
func keySearch(i int) string { return "ws:" + strconv.Itoa(i) }

// itemID returns the id of the output item key of response m, made with
// prefix the first time.
func (c *Call) itemID(m Meta, key, prefix string) string {
	if c.ids == nil {
		c.ids = map[string]string{}
	}
	id, ok := c.ids[key]
	if !ok {
		id = NewItemID(prefix, m.ID)
		c.ids[key] = id
	}
	return id
}

// itemIDRandom is the length of the random part of an item id.
const itemIDRandom = 16

// NewItemID returns a fresh item id of the response responseID, e.g.
// "msg_" + 16 random characters + the response id's own random part. An
// item id thus names the response that holds it (as OpenAI's ids share
// their tail with their response's), so a reference to the item is
// resolved with one lookup of that response (ResponseOfItem).
func NewItemID(prefix, responseID string) string {
	return prefix + "_" + randomID(itemIDRandom) + strings.TrimPrefix(responseID, "resp_")
}

// ResponseOfItem returns the id of the response that holds the item id, for
// ids made by NewItemID; ok is false for other ids.
func ResponseOfItem(id string) (responseID string, ok bool) {
	_, rest, found := strings.Cut(id, "_")
	if !found || len(rest) <= itemIDRandom || strings.IndexFunc(rest, func(r rune) bool { return !strings.ContainsRune(idAlphabet, r) }) >= 0 {
		return "", false
	}
	return "resp_" + rest[itemIDRandom:], true
}

// NewToolCallID returns a fresh chat tool call id ("call_…").
func NewToolCallID() string { return "call_" + randomID(24) }

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on supported platforms
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value encoded here is built from plain Go types and
		// already-valid raw JSON; failing is a programming error.
		panic(fmt.Sprintf("openai: encode %T: %v", v, err))
	}
	return b
}

// decodeObject decodes body (a JSON object) into v, mapping errors to 400s.
// decodeRequest decodes a request body into v, then checks that it named
// a model (*model, a field of v) and that its numbers are in range.
func decodeRequest(body []byte, v any, model *string, numbers []numberRule) error {
	if err := decodeObject(body, v); err != nil {
		return err
	}
	if *model == "" {
		return llmapi.InvalidRequest("model", "missing_required_parameter", "model is required")
	}
	return checkNumbers(rawFields(body), numbers...)
}

func decodeObject(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return llmapi.InvalidRequest("", "invalid_json", "request body must be a JSON object")
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return llmapi.InvalidRequest(te.Field, "invalid_type", fmt.Sprintf("invalid type for %s: expected %s", te.Field, te.Type))
		}
		return llmapi.InvalidRequest("", "invalid_json", "request body is not valid JSON: "+err.Error())
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func unsupported(param, why string) error {
	return llmapi.InvalidRequest(param, "unsupported_parameter", fmt.Sprintf("%s is not supported: %s", param, why))
}

var validEfforts = []string{"none", "minimal", "low", "medium", "high", "xhigh"}

func checkEffort(param, effort string) error {
	if effort == "" {
		return nil
	}
	for _, e := range validEfforts {
		if effort == e {
			return nil
		}
	}
	return llmapi.InvalidRequest(param, "invalid_value", fmt.Sprintf("%s must be one of %s", param, strings.Join(validEfforts, ", ")))
}

// textOf parses content that is a string or an array of text-like parts
// whose "type" is in textTypes; other part types are rejected.
func textOf(param string, raw json.RawMessage, textTypes ...string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", llmapi.InvalidRequest(param, "invalid_type", param+" must be a string or an array of content parts")
	}
	var b strings.Builder
	for i, p := range parts {
		ok := false
		for _, t := range textTypes {
			ok = ok || p.Type == t
		}
		if !ok {
			return "", llmapi.InvalidRequest(fmt.Sprintf("%s[%d].type", param, i), "invalid_value", fmt.Sprintf("content part type %q is not allowed here (want %s)", p.Type, strings.Join(textTypes, " or ")))
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// usage is the OpenAI usage object shared by chat and completions.
type chatUsage struct {
	PromptTokens            int64            `json:"prompt_tokens"`
	CompletionTokens        int64            `json:"completion_tokens"`
	TotalTokens             int64            `json:"total_tokens"`
	PromptTokensDetails     map[string]int64 `json:"prompt_tokens_details"`
	CompletionTokensDetails map[string]int64 `json:"completion_tokens_details"`
}

func toChatUsage(u turn.Usage) chatUsage {
	total := u.TotalTokens
	if total == 0 {
		total = u.InputTokens + u.OutputTokens
	}
	return chatUsage{
		PromptTokens:        u.InputTokens,
		CompletionTokens:    u.OutputTokens,
		TotalTokens:         total,
		PromptTokensDetails: map[string]int64{"cached_tokens": u.CachedTokens, "audio_tokens": 0},
		CompletionTokensDetails: map[string]int64{
			"reasoning_tokens": u.ReasoningTokens, "audio_tokens": 0,
			"accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
		},
	}
}

// UsageOf maps neutral usage to the bus usage summary.
func UsageOf(u turn.Usage) *llmapi.Usage {
	total := u.TotalTokens
	if total == 0 {
		total = u.InputTokens + u.OutputTokens
	}
	return &llmapi.Usage{
		PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: total,
		CachedTokens: u.CachedTokens, ReasoningTokens: u.ReasoningTokens,
	}
}

// numberRule says what a numeric sampling field accepts.
type numberRule struct {
	param    string
	integer  bool
	min, max float64
}

// checkNumbers checks numeric request fields as OpenAI does: null or
// absent is fine; anything else must be a finite JSON number (an integer
// where one is required) within the rule's bounds. Errors are 400s in
// OpenAI's shape naming the field.
func checkNumbers(fields map[string]json.RawMessage, rules ...numberRule) error {
	for _, r := range rules {
		raw := fields[r.param]
		if isNull(raw) {
			continue
		}
		kind := "a decimal"
		if r.integer {
			kind = "an integer"
		}
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil || jsonKind(raw) != "a number" {
			return llmapi.InvalidRequest(r.param, "invalid_type", fmt.Sprintf("Invalid type for '%s': expected %s, but got %s instead.", r.param, kind, jsonKind(raw)))
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) { // out of range: ±Inf or 0, checked below
			return llmapi.InvalidRequest(r.param, "invalid_type", fmt.Sprintf("Invalid type for '%s': expected %s.", r.param, kind))
		}
		if r.integer && f != math.Trunc(f) {
			return llmapi.InvalidRequest(r.param, "invalid_type", fmt.Sprintf("Invalid type for '%s': expected an integer, but got a decimal instead.", r.param))
		}
		word := "decimal"
		if r.integer {
			word = "integer"
		}
		switch {
		case f < r.min:
			return llmapi.InvalidRequest(r.param, word+"_below_min_value", fmt.Sprintf("Invalid '%s': %s below minimum value. Expected a value >= %s, but got %s instead.", r.param, word, fmtNum(r.min), n))
		case f > r.max:
			return llmapi.InvalidRequest(r.param, word+"_above_max_value", fmt.Sprintf("Invalid '%s': %s above maximum value. Expected a value <= %s, but got %s instead.", r.param, word, fmtNum(r.max), n))
		}
	}
	return nil
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// jsonKind names the JSON type of raw for error messages.
func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// notNull rejects a null (or absent) value of a field that needs one.
func notNull(param string, raw json.RawMessage, want string) error {
	if isNull(raw) {
		return llmapi.InvalidRequest(param, "invalid_type", fmt.Sprintf("Invalid value for '%s': expected %s, got null.", param, want))
	}
	return nil
}

// rawFields decodes the top level of a JSON object (already checked to be
// one) for the generic field checks.
func rawFields(body []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(body, &m)
	return m
}
