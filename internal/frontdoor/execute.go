package frontdoor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/internal/tracing"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// readBody reads the whole request body, refusing bodies over MaxBodyBytes
// before anything is parsed.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *llmapi.APIError) {
	tooLarge := llmapi.NewError(http.StatusRequestEntityTooLarge, llmapi.TypeInvalidRequest, "request_body_too_large", "",
		fmt.Sprintf("The request body exceeds the limit of %d bytes.", s.cfg.MaxBodyBytes))
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, tooLarge
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout)) // unsupported writers just skip it
	body, err := io.ReadAll(http.MaxBytesReader(unwrap(w), r.Body, s.cfg.MaxBodyBytes))
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge
		}
		return nil, llmapi.InvalidRequest("", "invalid_body", "The request body could not be read.")
	}
	return body, nil
}

// rejectUnread answers e without reading the request body, and closes the
// connection after it: the server would otherwise read (up to 256 KiB of)
// the body before answering, for as long as the client takes to send it.
func rejectUnread(w http.ResponseWriter, e *llmapi.APIError) {
	w.Header().Set("Connection", "close")
	writeError(w, e)
}

// authorize verifies the caller's bearer token and, when scope is not
// empty, that it carries scope.
func (s *Server) authorize(r *http.Request, scope string) (*auth.Claims, *llmapi.APIError) {
	claims, err := s.cfg.Verifier.Authenticate(r)
	switch {
	case errors.Is(err, auth.ErrMissingToken):
		return nil, llmapi.NewError(http.StatusUnauthorized, llmapi.TypeAuthentication, "missing_token", "",
			"You didn't provide a bearer token. Send it in the Authorization header: \"Authorization: Bearer <token>\".")
	case err != nil:
		return nil, llmapi.NewError(http.StatusUnauthorized, llmapi.TypeAuthentication, "invalid_token", "",
			"The bearer token was not accepted: "+err.Error()+".")
	case scope != "" && !claims.HasScope(scope):
		return nil, llmapi.NewError(http.StatusForbidden, llmapi.TypePermission, "insufficient_scope", "",
			fmt.Sprintf("The bearer token lacks the scope %s needed for this endpoint.", scope))
	}
	return claims, nil
}

// clientRequest is what the front door reads from a client body.
type clientRequest struct {
	model        string
	stream       bool
	includeUsage bool
}

// requiredField is the field each operation cannot run without.
func requiredField(op llmapi.Operation) string {
	switch op {
	case llmapi.OpChatCompletions:
		return "messages"
	case llmapi.OpResponses:
		return "input"
	default:
		return "prompt"
	}
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// parseRequest checks the body lightly; the worker validates it in depth.
func parseRequest(op llmapi.Operation, body []byte) (clientRequest, *llmapi.APIError) {
	var cr clientRequest
	trimmed := bytes.TrimSpace(body)
	var fields map[string]json.RawMessage
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &fields) != nil {
		return cr, llmapi.InvalidRequest("", "invalid_json",
			"We could not parse the JSON body of your request: it must be a JSON object.")
	}
	if isNull(fields["model"]) {
		return cr, llmapi.InvalidRequest("model", "missing_required_parameter", "Missing required parameter: 'model'.")
	}
	if err := json.Unmarshal(fields["model"], &cr.model); err != nil || cr.model == "" {
		return cr, llmapi.InvalidRequest("model", "invalid_type", "Invalid type for 'model': expected a non-empty string.")
	}
	if !isNull(fields["stream"]) {
		if err := json.Unmarshal(fields["stream"], &cr.stream); err != nil {
			return cr, llmapi.InvalidRequest("stream", "invalid_type", "Invalid type for 'stream': expected a boolean.")
		}
	}
	if req := requiredField(op); isNull(fields[req]) {
		return cr, llmapi.InvalidRequest(req, "missing_required_parameter", fmt.Sprintf("Missing required parameter: '%s'.", req))
	}
	var opts struct {
		IncludeUsage bool `json:"include_usage"`
	}
	if !isNull(fields["stream_options"]) && json.Unmarshal(fields["stream_options"], &opts) == nil {
		cr.includeUsage = opts.IncludeUsage // a bad value is the worker's to reject
	}
	return cr, nil
}

func modelNotFound(id string) *llmapi.APIError {
	return llmapi.NewError(http.StatusNotFound, llmapi.TypeInvalidRequest, "model_not_found", "model",
		fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", id))
}

// exchange is one execution request in flight.
type exchange struct {
	s        *Server
	w        http.ResponseWriter
	r        *http.Request
	op       llmapi.Operation
	id       string
	req      clientRequest
	charged  bool // its tokens were charged (usage.go)
	obs      *observation
	wt       *correlator.Call
	identity string
	deadline time.Time
	start    time.Time
	status   int    // the HTTP status the client got, for the log
	errCode  string // the error the client got (in-stream ones too), for the log
}

// logDone writes the access log line: the HTTP status, and the error the
// client got, also when it came as a stream frame after a 200.
func (x *exchange) logDone(attrs ...any) {
	attrs = append([]any{"request_id", x.id, "operation", string(x.op), "identity", x.identity, "status", x.status}, attrs...)
	if x.errCode != "" {
		attrs = append(attrs, "error", x.errCode)
	}
	x.obs.answered = time.Now()
	x.s.log.InfoContext(x.r.Context(), "request", append(attrs, "duration", x.obs.answered.Sub(x.start).Round(time.Millisecond))...)
}

// handleExecute serves POST on op's REST path.
func (s *Server) handleExecute(op llmapi.Operation) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		o, w, r := s.observe(w, r, op, start)
		defer o.end()
		if !allow(w, r, http.MethodPost) {
			return
		}
		// The token first: an unauthenticated body is never read.
		claims, apiErr := s.authorize(r, llmapi.Scope)
		if apiErr != nil {
			rejectUnread(w, apiErr)
			return
		}
		body, apiErr := s.readBody(w, r)
		if apiErr != nil {
			writeError(w, apiErr)
			return
		}
		cr, apiErr := parseRequest(op, body)
		if apiErr != nil {
			writeError(w, apiErr)
			return
		}
		if _, ok := s.cfg.Catalog.Lookup(cr.model); !ok {
			writeError(w, modelNotFound(cr.model))
			return
		}
		o.model = cr.model
		if !s.available(w, op, cr.stream) {
			return
		}
		if !s.admit(w, r, claims.Subject, cr.model) {
			return
		}
		x := &exchange{s: s, w: w, r: r, op: op, id: correlator.NewRequestID(), req: cr, identity: claims.Subject, start: start, obs: o}
		o.x, x.deadline = x, start.Add(s.cfg.Timeout)
		if !x.register(cr.stream, cr.includeUsage) {
			return
		}
		defer s.calls.Forget(x.wt)
		defer x.settle()
		w.Header().Set("X-Request-Id", x.id)
		x.run(claims.Subject, body)
		x.logDone("model", cr.model, "stream", cr.stream)
	}
}

// handleStored serves GET and DELETE /v1/responses/{id} through the bus:
// the response store belongs to the workers, and the caller's identity
// scopes the lookup.
func (s *Server) handleStored(w http.ResponseWriter, r *http.Request) {
	op := llmapi.OpResponsesRetrieve
	if r.Method == http.MethodDelete {
		op = llmapi.OpResponsesDelete
	}
	s.serveStored(w, r, op, []string{http.MethodGet, http.MethodDelete}, func(r *http.Request) (any, *llmapi.APIError) {
		return llmapi.StateRequest{ResponseID: r.PathValue("id")}, nil
	})
}

// serveStored runs one operation on the caller's stored responses over the
// bus (retrieve, delete, input items); request reads its payload from the
// URL.
func (s *Server) serveStored(w http.ResponseWriter, r *http.Request, op llmapi.Operation, methods []string, request func(*http.Request) (any, *llmapi.APIError)) {
	start := time.Now()
	o, w, r := s.observe(w, r, op, start)
	defer o.end()
	if !allow(w, r, methods...) {
		return
	}
	claims, apiErr := s.authorize(r, llmapi.Scope)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	payload, apiErr := request(r)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if !s.available(w, op, false) {
		return
	}
	body, _ := json.Marshal(payload) // strings and ints always encode
	x := &exchange{s: s, w: w, r: r, op: op, id: correlator.NewRequestID(), identity: claims.Subject, start: start, obs: o}
	o.x, x.deadline = x, start.Add(s.cfg.Timeout)
	if !x.register(false, false) {
		return
	}
	defer s.calls.Forget(x.wt)
	w.Header().Set("X-Request-Id", x.id)
	x.run(claims.Subject, body)
	x.logDone()
}

// available answers 503 and reports false while the server is draining or
// cannot hear op's responses (stream: as chunks).
func (s *Server) available(w http.ResponseWriter, op llmapi.Operation, stream bool) bool {
	if s.draining.Load() {
		writeError(w, llmapi.NewError(http.StatusServiceUnavailable, "", "shutting_down", "", "The server is shutting down; retry."))
		return false
	}
	if !s.canExecute(op, stream) {
		writeError(w, llmapi.NewError(http.StatusServiceUnavailable, "", "events_unavailable", "",
			"The Events API response listeners are not connected; retry shortly."))
		return false
	}
	return true
}

// run publishes the request event and answers with its outcome.
func (x *exchange) run(identity string, body []byte) {
	ctx := x.r.Context()
	dl := x.deadline.UTC()
	ev := llmapi.ExecutionEventRequest{
		RequestID: x.id, Operation: x.op, Model: x.req.model, Stream: x.req.stream,
		IdentityID: identity, Deadline: &dl, Body: json.RawMessage(body),
	}
	pctx, cancel := context.WithDeadline(ctx, x.deadline)
	pctx, published := x.publishSpan(pctx)
	ev.TraceParent = tracing.TraceParent(pctx)
	acc, err := x.s.cfg.Events.PublishJSON(pctx, x.op.RequestEvent(), x.id, ev)
	published(acc, err)
	cancel()
	if err != nil {
		switch {
		case ctx.Err() != nil:
			x.gone()
		case errors.Is(err, context.DeadlineExceeded):
			x.timeout()
		default:
			x.fail(publishError(err))
			x.s.log.WarnContext(ctx, "publish failed", "request_id", x.id, "name", x.op.RequestEvent(), "err", err)
		}
		return
	}
	if acc.Groups != nil && *acc.Groups == 0 {
		// No worker group exists: nobody will ever take it.
		x.fail(correlator.NoWorkerAvailable())
		x.s.log.WarnContext(ctx, "no worker available: the request reached no consumer group", "request_id", x.id, "name", x.op.RequestEvent())
		return
	}
	if x.req.stream {
		x.stream()
		return
	}
	x.await()
}

// publishError maps a failed publish to the client's answer: 503 when the
// Events API is unreachable or unavailable, 502 when it refused the event.
func publishError(err error) *llmapi.APIError {
	if apiErr, ok := errors.AsType[*events.APIError](err); ok && apiErr.Status < 500 {
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "events_publish_rejected", "",
			fmt.Sprintf("The Events API refused the execution request (%d %s).", apiErr.Status, apiErr.Code))
	}
	return llmapi.NewError(http.StatusServiceUnavailable, "", "events_unavailable", "",
		"The Events API cannot be reached; retry shortly.")
}

// await answers a non-streaming request with its response event.
func (x *exchange) await() {
	timer := time.NewTimer(time.Until(x.deadline))
	defer timer.Stop()
	for {
		_, resp, failure := x.wt.Take()
		switch {
		case failure != nil:
			x.fail(failure)
			return
		case resp != nil:
			x.charge(resp)
			x.status = resp.StatusCode
			if resp.IsError() {
				x.errCode = responseErrorCode(resp)
			}
			writeAnswer(x.w, resp)
			return
		}
		select {
		case <-x.wt.Notify():
		case <-timer.C:
			x.timeout()
			return
		case <-x.r.Context().Done():
			x.gone()
			return
		}
	}
}

// fail answers with an error before any stream frame went out.
func (x *exchange) fail(e *llmapi.APIError) {
	x.status, x.errCode = e.Status, e.Code
	writeError(x.w, e)
}

// responseErrorCode is the error code of a failed response, for the log.
func responseErrorCode(resp *llmapi.ExecutionEventResponse) string {
	if obj, ok := llmapi.ParseErrorBody(resp.Body); ok && obj.Code != nil {
		return *obj.Code
	}
	return "upstream_error"
}

// timeout answers 504 and cancels the worker's run.
func (x *exchange) timeout() {
	x.fail(llmapi.NewError(http.StatusGatewayTimeout, llmapi.TypeTimeout, "timeout", "",
		fmt.Sprintf("No answer from the execution worker within %s.", x.s.cfg.Timeout)))
	x.publishCancel(llmapi.ReasonTimeout)
}

// gone handles a request context that ended: the client went away, or
// shutdown ran out of time (then the client still gets a 503).
func (x *exchange) gone() {
	if x.s.hardStop.Err() != nil {
		x.fail(llmapi.NewError(http.StatusServiceUnavailable, "", "shutting_down", "", "The server shut down before the answer arrived; retry."))
		x.publishCancel(llmapi.ReasonTimeout)
		return
	}
	x.status, x.errCode = 499, "client_closed" // for the log only
	x.publishCancel(llmapi.ReasonClientDisconnected)
}

// publishCancel tells the worker to stop; bounded, never tied to the
// (possibly ended) request context.
func (x *exchange) publishCancel(reason string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(x.r.Context()), cancelPublishTimeout)
	defer cancel()
	_, err := x.s.cfg.Events.PublishJSON(ctx, x.op.CancelEvent(), x.id,
		llmapi.ExecutionEventCancel{RequestID: x.id, Operation: x.op, Reason: reason})
	if err != nil {
		x.s.log.Warn("cancel publish failed", "request_id", x.id, "reason", reason, "err", err)
		return
	}
	x.s.log.Info("request cancelled", "request_id", x.id, "reason", reason)
}

// writeAnswer writes a response event's answer, with a retry-after header
// when the worker said when a retry may succeed (a limit that resets).
func writeAnswer(w http.ResponseWriter, resp *llmapi.ExecutionEventResponse) {
	if resp.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(resp.RetryAfter, 10))
	}
	writeRaw(w, resp.StatusCode, resp.Body)
}
