package llmapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

func TestOperationNames(t *testing.T) {
	tests := []struct {
		op                       llmapi.Operation
		request, response, chunk string
		cancel, restPath, slug   string
		state                    bool
	}{
		{llmapi.OpChatCompletions, "bus.llm.chat.completions.request", "bus.llm.chat.completions.response", "bus.llm.chat.completions.chunk",
			"bus.llm.chat.completions.cancel", "/v1/chat/completions", "chat_completions", false},
		{llmapi.OpResponses, "bus.llm.responses.request", "bus.llm.responses.response", "bus.llm.responses.chunk",
			"bus.llm.responses.cancel", "/v1/responses", "responses", false},
		{llmapi.OpCompletions, "bus.llm.completions.request", "bus.llm.completions.response", "bus.llm.completions.chunk",
			"bus.llm.completions.cancel", "/v1/completions", "completions", false},
		{llmapi.OpResponsesRetrieve, "bus.llm.responses.retrieve.request", "bus.llm.responses.retrieve.response", "bus.llm.responses.retrieve.chunk",
			"bus.llm.responses.retrieve.cancel", "/v1/responses/{id}", "responses_retrieve", true},
		{llmapi.OpResponsesDelete, "bus.llm.responses.delete.request", "bus.llm.responses.delete.response", "bus.llm.responses.delete.chunk",
			"bus.llm.responses.delete.cancel", "/v1/responses/{id}", "responses_delete", true},
		{llmapi.OpResponsesInputItems, "bus.llm.responses.input_items.request", "bus.llm.responses.input_items.response", "bus.llm.responses.input_items.chunk",
			"bus.llm.responses.input_items.cancel", "/v1/responses/{id}/input_items", "responses_input_items", true},
	}
	if got := llmapi.AllOperations(); len(got) != len(tests) {
		t.Fatalf("AllOperations = %v", got)
	}
	for i, tc := range tests {
		op := tc.op
		if llmapi.AllOperations()[i] != op {
			t.Errorf("AllOperations()[%d] = %q, want %q", i, llmapi.AllOperations()[i], op)
		}
		got := []string{op.RequestEvent(), op.ResponseEvent(), op.ChunkEvent(), op.CancelEvent(), op.RESTPath(), op.Slug()}
		want := []string{tc.request, tc.response, tc.chunk, tc.cancel, tc.restPath, tc.slug}
		for j := range got {
			if got[j] != want[j] {
				t.Errorf("%s: %q, want %q", op, got[j], want[j])
			}
		}
		if op.IsState() != tc.state || !op.Valid() {
			t.Errorf("%s: IsState %v Valid %v", op, op.IsState(), op.Valid())
		}
		if p, err := llmapi.ParseOperation(string(op)); err != nil || p != op {
			t.Errorf("ParseOperation(%q) = %q, %v", op, p, err)
		}
		for kind, name := range map[llmapi.EventKind]string{
			llmapi.KindRequest: tc.request, llmapi.KindResponse: tc.response, llmapi.KindChunk: tc.chunk, llmapi.KindCancel: tc.cancel,
		} {
			gop, gkind, err := llmapi.ParseEventName(name)
			if err != nil || gop != op || gkind != kind {
				t.Errorf("ParseEventName(%q) = %q, %q, %v", name, gop, gkind, err)
			}
		}
	}
	if len(llmapi.Operations()) != 3 || len(llmapi.StateOperations()) != 3 {
		t.Errorf("Operations %v StateOperations %v", llmapi.Operations(), llmapi.StateOperations())
	}
}

func TestParseEventNameRejects(t *testing.T) {
	for _, name := range []string{
		"", "bus.llm.", "bus.llm.chat", "bus.llm.chat.completions", "bus.llm.chat.completions.reply",
		"bus.llm.embeddings.request", "bus.other.responses.request", "bus.llm.responses.request.extra",
		"bus.llm.responses.retrieve", "BUS.LLM.responses.request",
	} {
		if op, kind, err := llmapi.ParseEventName(name); err == nil {
			t.Errorf("ParseEventName(%q) = %q, %q, want an error", name, op, kind)
		}
	}
	for _, s := range []string{"", "chat_completions", "Responses", "responses.get"} {
		if _, err := llmapi.ParseOperation(s); err == nil || llmapi.Operation(s).Valid() {
			t.Errorf("ParseOperation(%q) accepted", s)
		}
	}
}

func TestAPIErrorBody(t *testing.T) {
	tests := []struct {
		err  *llmapi.APIError
		json string
		str  string
	}{
		{
			llmapi.InvalidRequest("n", "unsupported_parameter", "n is not supported"),
			`{"error":{"message":"n is not supported","type":"invalid_request_error","code":"unsupported_parameter","param":"n"}}`,
			"unsupported_parameter: n is not supported",
		},
		{
			llmapi.NewError(http.StatusInternalServerError, "", "", "", "boom"),
			`{"error":{"message":"boom","type":"server_error","code":null,"param":null}}`,
			"boom",
		},
		{
			llmapi.NewError(http.StatusNotFound, "", "model_not_found", "", `quote " and <tag>`),
			`{"error":{"message":"quote \" and \u003ctag\u003e","type":"not_found_error","code":"model_not_found","param":null}}`,
			`model_not_found: quote " and <tag>`,
		},
	}
	for _, tc := range tests {
		if got := string(tc.err.JSON()); got != tc.json {
			t.Errorf("JSON = %s\nwant   %s", got, tc.json)
		}
		if tc.err.Error() != tc.str {
			t.Errorf("Error() = %q, want %q", tc.err.Error(), tc.str)
		}
		obj, ok := llmapi.ParseErrorBody(tc.err.JSON())
		if !ok || obj.Message != tc.err.Message || obj.Type != tc.err.Type || deref(obj.Code) != tc.err.Code || deref(obj.Param) != tc.err.Param {
			t.Errorf("ParseErrorBody round trip: %+v %v", obj, ok)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestDefaultErrorType(t *testing.T) {
	for status, want := range map[int]string{
		400: llmapi.TypeInvalidRequest, 401: llmapi.TypeAuthentication, 403: llmapi.TypePermission, 404: llmapi.TypeNotFound,
		408: llmapi.TypeTimeout, 409: llmapi.TypeInvalidRequest, 429: llmapi.TypeRateLimit, 499: llmapi.TypeInvalidRequest,
		500: llmapi.TypeServer, 502: llmapi.TypeServer, 503: llmapi.TypeUnavailable, 504: llmapi.TypeTimeout,
	} {
		if got := llmapi.DefaultErrorType(status); got != want {
			t.Errorf("DefaultErrorType(%d) = %q, want %q", status, got, want)
		}
	}
}

func TestErrorResponse(t *testing.T) {
	req := &llmapi.ExecutionEventRequest{RequestID: "req_1", Operation: llmapi.OpResponses}
	apiErr := llmapi.NewError(http.StatusTooManyRequests, "", "rate_limited", "", "slow down")
	tests := []struct {
		name   string
		err    error
		status int
		code   string
		typ    string
		msg    string
	}{
		{"api error", apiErr, 429, "rate_limited", llmapi.TypeRateLimit, "slow down"},
		{"wrapped api error", fmt.Errorf("outer: %w", apiErr), 429, "rate_limited", llmapi.TypeRateLimit, "slow down"},
		{"joined api error", errors.Join(errors.New("x"), apiErr), 429, "rate_limited", llmapi.TypeRateLimit, "slow down"},
		{"plain error", errors.New("disk on fire"), 500, "internal_error", llmapi.TypeServer, "disk on fire"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := llmapi.ErrorResponse(req, tc.err)
			if resp.RequestID != "req_1" || resp.Operation != llmapi.OpResponses || resp.StatusCode != tc.status || !resp.IsError() {
				t.Errorf("response %+v", resp)
			}
			obj, ok := llmapi.ParseErrorBody(resp.Body)
			if !ok || obj.Code == nil || *obj.Code != tc.code || obj.Type != tc.typ || obj.Message != tc.msg || obj.Param != nil {
				t.Errorf("body %s", resp.Body)
			}
		})
	}
}

func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"error":{"message":"m","type":"t","code":null,"param":"p"}}`, true},
		{`{"error":{}}`, true},
		{`{"error":null}`, false},
		{`{"id":"chatcmpl-1"}`, false},
		{`[]`, false},
		{`not json`, false},
		{``, false},
	}
	for _, tc := range tests {
		_, ok := llmapi.ParseErrorBody([]byte(tc.body))
		if ok != tc.ok {
			t.Errorf("ParseErrorBody(%s) ok = %v", tc.body, ok)
		}
	}
	obj, _ := llmapi.ParseErrorBody([]byte(`{"error":{"message":"m","type":"t","code":null,"param":"p"}}`))
	if obj.Message != "m" || obj.Type != "t" || obj.Code != nil || obj.Param == nil || *obj.Param != "p" {
		t.Errorf("decoded %+v", obj)
	}
}

func TestIncludeUsage(t *testing.T) {
	for body, want := range map[string]bool{
		`{"stream":true,"stream_options":{"include_usage":true}}`:  true,
		`{"stream":true,"stream_options":{"include_usage":false}}`: false,
		`{"stream":true,"stream_options":{}}`:                      false,
		`{"stream":true,"stream_options":null}`:                    false,
		`{"stream":true}`:                                          false,
		`{"stream_options":{"include_usage":"yes"}}`:               false,
		`not json`: false,
		``:         false,
	} {
		if got := llmapi.IncludeUsage(json.RawMessage(body)); got != want {
			t.Errorf("IncludeUsage(%s) = %v", body, got)
		}
	}
}

func TestIsTerminalFrame(t *testing.T) {
	tests := []struct {
		op           llmapi.Operation
		frame        string
		includeUsage bool
		want         bool
	}{
		{llmapi.OpChatCompletions, `{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}`, false, false},
		{llmapi.OpChatCompletions, `{"choices":[{"delta":{},"finish_reason":"stop"}]}`, false, true},
		{llmapi.OpChatCompletions, `{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}`, true, false},
		{llmapi.OpChatCompletions, `{"choices":[],"usage":{"total_tokens":1}}`, true, true},
		{llmapi.OpChatCompletions, `{"choices":[],"usage":null}`, true, false},
		{llmapi.OpChatCompletions, `{"error":{"message":"x"}}`, false, true},
		{llmapi.OpChatCompletions, `{"error":{"message":"x"}}`, true, true},
		{llmapi.OpChatCompletions, `{"error":null,"choices":[{"finish_reason":null}]}`, false, false},
		{llmapi.OpCompletions, `{"choices":[{"text":"","finish_reason":"length"}]}`, false, true},
		{llmapi.OpCompletions, `{"choices":[{"text":"a","finish_reason":null}]}`, false, false},
		{llmapi.OpResponses, `{"type":"response.output_text.delta"}`, false, false},
		{llmapi.OpResponses, `{"type":"response.completed"}`, false, true},
		{llmapi.OpResponses, `{"type":"response.failed"}`, true, true},
		{llmapi.OpResponses, `{"type":"response.incomplete"}`, false, true},
		{llmapi.OpResponses, `{"type":"error"}`, false, true},
		{llmapi.OpResponses, `{"error":{"message":"x"}}`, false, true},
		{llmapi.OpChatCompletions, `garbage`, false, false},
	}
	for _, tc := range tests {
		if got := llmapi.IsTerminalFrame(tc.op, json.RawMessage(tc.frame), tc.includeUsage); got != tc.want {
			t.Errorf("IsTerminalFrame(%s, %s, %v) = %v", tc.op, tc.frame, tc.includeUsage, got)
		}
	}
}

func TestValidate(t *testing.T) {
	deadline := time.Unix(1700000000, 0)
	tests := []struct {
		req llmapi.ExecutionEventRequest
		ok  bool
	}{
		{llmapi.ExecutionEventRequest{RequestID: "r", Operation: llmapi.OpResponses, Body: json.RawMessage(`{}`), Deadline: &deadline}, true},
		{llmapi.ExecutionEventRequest{RequestID: "r", Operation: llmapi.OpResponsesDelete, Body: json.RawMessage(`{"response_id":"x"}`)}, true},
		{llmapi.ExecutionEventRequest{Operation: llmapi.OpResponses, Body: json.RawMessage(`{}`)}, false},
		{llmapi.ExecutionEventRequest{RequestID: "r", Operation: "x", Body: json.RawMessage(`{}`)}, false},
		{llmapi.ExecutionEventRequest{RequestID: "r", Operation: llmapi.OpResponses}, false},
		{llmapi.ExecutionEventRequest{RequestID: "r", Operation: llmapi.OpResponses, Body: json.RawMessage(`null`)}, false},
	}
	for i, tc := range tests {
		if err := tc.req.Validate(); (err == nil) != tc.ok {
			t.Errorf("%d: Validate = %v", i, err)
		}
	}
}

func TestPayloadFieldNames(t *testing.T) {
	deadline := time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC)
	b, _ := json.Marshal(llmapi.ExecutionEventRequest{
		RequestID: "req_1", Operation: llmapi.OpChatCompletions, Model: "m", Stream: true, IdentityID: "u", Deadline: &deadline, Body: json.RawMessage(`{}`),
	})
	want := `{"requestId":"req_1","operation":"chat.completions","model":"m","stream":true,"identityId":"u","deadline":"2026-11-24T15:00:00Z","body":{}}`
	if string(b) != want {
		t.Errorf("request %s\nwant    %s", b, want)
	}
	b, _ = json.Marshal(llmapi.ExecutionEventResponse{RequestID: "req_1", Operation: llmapi.OpResponses, StatusCode: 200, Body: json.RawMessage(`{}`),
		Usage: &llmapi.Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}})
	want = `{"requestId":"req_1","operation":"responses","statusCode":200,"body":{},"usage":{"promptTokens":1,"completionTokens":2,"totalTokens":3}}`
	if string(b) != want {
		t.Errorf("response %s\nwant     %s", b, want)
	}
	b, _ = json.Marshal(llmapi.ExecutionEventChunk{RequestID: "r", Operation: llmapi.OpCompletions, Seq: 0, Data: json.RawMessage(`{}`)})
	if string(b) != `{"requestId":"r","operation":"completions","seq":0,"data":{}}` {
		t.Errorf("chunk %s", b)
	}
	b, _ = json.Marshal(llmapi.ExecutionEventCancel{RequestID: "r", Operation: llmapi.OpResponses, Reason: llmapi.ReasonClientDisconnected})
	if string(b) != `{"requestId":"r","operation":"responses","reason":"client_disconnected"}` {
		t.Errorf("cancel %s", b)
	}
}

func TestInputItemsQuery(t *testing.T) {
	ok := []struct {
		query string
		want  llmapi.InputItemsRequest
	}{
		{"", llmapi.InputItemsRequest{ResponseID: "resp_1"}},
		{"limit=1&order=asc&after=msg_a", llmapi.InputItemsRequest{ResponseID: "resp_1", Limit: 1, Order: "asc", After: "msg_a"}},
		{"limit=100&order=desc&before=msg_b&include[]=a&include=b", llmapi.InputItemsRequest{ResponseID: "resp_1", Limit: 100, Order: "desc", Before: "msg_b", Include: []string{"b", "a"}}},
	}
	for _, tc := range ok {
		q, _ := url.ParseQuery(tc.query)
		got, err := llmapi.InputItemsQuery("resp_1", q)
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q: %+v, want %+v", tc.query, got, tc.want)
		}
	}
	if r := (llmapi.InputItemsRequest{}); r.PageSize() != llmapi.DefaultInputItemsLimit || r.Ascending() {
		t.Errorf("defaults: page %d ascending %v", r.PageSize(), r.Ascending())
	}
	bad := []struct{ id, query, param, code string }{
		{"resp_1", "limit=0", "limit", "integer_below_min_value"},
		{"resp_1", "limit=-3", "limit", "integer_below_min_value"},
		{"resp_1", "limit=101", "limit", "integer_above_max_value"},
		{"resp_1", "limit=2.5", "limit", "invalid_type"},
		{"resp_1", "order=random", "order", "invalid_value"},
		{"resp_1", "after=a&before=b", "before", "invalid_value"},
		{"", "", "response_id", "missing_required_parameter"},
	}
	for _, tc := range bad {
		q, _ := url.ParseQuery(tc.query)
		_, err := llmapi.InputItemsQuery(tc.id, q)
		if err == nil || err.Status != 400 || err.Param != tc.param || err.Code != tc.code || err.Type != llmapi.TypeInvalidRequest {
			t.Errorf("%q: %+v, want 400 %s %s", tc.query, err, tc.param, tc.code)
		}
	}
	// Validate checks bus requests the same way.
	if err := (&llmapi.InputItemsRequest{ResponseID: "r", Limit: -1}).Validate(); err == nil || err.Param != "limit" {
		t.Errorf("Validate: %v", err)
	}
}
