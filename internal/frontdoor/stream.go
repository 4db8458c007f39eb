package frontdoor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// sseWriter writes OpenAI Server-Sent Events frames, flushing each. The
// HTTP headers go out with the first frame, so errors before it keep their
// status code.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	op      llmapi.Operation
	started bool
	buf     bytes.Buffer
}

func (sw *sseWriter) start() {
	h := sw.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	sw.w.WriteHeader(http.StatusOK)
	sw.started = true
}

// frame writes one frame: "data: <frame>\n\n", preceded by
// "event: <type>\n" for the Responses API.
func (sw *sseWriter) frame(data json.RawMessage, eventType string) error {
	if !sw.started {
		sw.start()
	}
	sw.buf.Reset()
	if sw.op == llmapi.OpResponses && eventType != "" {
		sw.buf.WriteString("event: " + eventType + "\n")
	}
	sw.buf.WriteString("data: ")
	if err := json.Compact(&sw.buf, data); err != nil {
		return fmt.Errorf("frontdoor: compact frame: %w", err) // validated on arrival; unreachable
	}
	sw.buf.WriteString("\n\n")
	return sw.flush()
}

// done writes the "data: [DONE]" terminator of chat and text completions.
func (sw *sseWriter) done() error {
	sw.buf.Reset()
	sw.buf.WriteString("data: [DONE]\n\n")
	return sw.flush()
}

func (sw *sseWriter) flush() error {
	if _, err := sw.w.Write(sw.buf.Bytes()); err != nil {
		return fmt.Errorf("frontdoor: write frame: %w", err)
	}
	if err := sw.rc.Flush(); err != nil {
		return fmt.Errorf("frontdoor: flush frame: %w", err)
	}
	return nil
}

// frameInfo is what the front door reads from a stream frame.
// inspect returns the SSE event type of a frame (Responses API only),
// whether it ends the stream (llmapi.IsTerminalFrame), and whether it is an
// error frame.
func inspect(op llmapi.Operation, includeUsage bool, data json.RawMessage) (eventType string, terminal, isErr bool) {
	var fi struct {
		Type  string          `json:"type"`
		Error json.RawMessage `json:"error"`
	}
	_ = json.Unmarshal(data, &fi) // a frame that does not match is simply not terminal
	if op == llmapi.OpResponses && !strings.ContainsAny(fi.Type, "\r\n") {
		eventType = fi.Type
	}
	isErr = !isNull(fi.Error) || (op == llmapi.OpResponses && fi.Type == "error")
	if isErr && op == llmapi.OpResponses && eventType == "" {
		eventType = "error"
	}
	return eventType, llmapi.IsTerminalFrame(op, data, includeUsage), isErr
}

// errorFrame builds the OpenAI error frame for e: {"error": {...}}; for the
// Responses API it is also a typed "error" event (type, code, message,
// param at the top level).
func errorFrame(op llmapi.Operation, e llmapi.ErrorObject) json.RawMessage {
	var v any = llmapi.ErrorBody{Error: e}
	if op == llmapi.OpResponses {
		v = struct {
			Type    string             `json:"type"`
			Code    *string            `json:"code"`
			Message string             `json:"message"`
			Param   *string            `json:"param"`
			Error   llmapi.ErrorObject `json:"error"`
		}{"error", e.Code, e.Message, e.Param, e}
	}
	b, _ := json.Marshal(v) // strings and pointers to strings always encode
	return b
}

// responseError is the error object a failed response carries.
func responseError(resp *llmapi.ExecutionEventResponse) llmapi.ErrorObject {
	if obj, ok := llmapi.ParseErrorBody(resp.Body); ok {
		return obj
	}
	return llmapi.NewError(resp.StatusCode, "", "upstream_error", "",
		fmt.Sprintf("The execution worker failed with status %d.", resp.StatusCode)).Body().Error
}

// stream answers a streaming request: chunks in seq order as SSE frames
// until the terminal frame, bounded by the deadline.
func (x *exchange) stream() {
	sw := &sseWriter{w: x.w, rc: http.NewResponseController(x.w), op: x.op}
	// A reader that stops reading cannot hold the handler past the
	// deadline (and a little to write the timeout frame).
	_ = sw.rc.SetWriteDeadline(x.deadline.Add(streamWriteGrace)) // unsupported writers just skip it
	timer := time.NewTimer(time.Until(x.deadline))
	defer timer.Stop()
	var (
		grace      <-chan time.Time
		graceTimer *time.Timer
		resp       *llmapi.ExecutionEventResponse
		finished   bool
	)
	defer func() {
		if graceTimer != nil {
			graceTimer.Stop()
		}
	}()
	for {
		frames, r, failure := x.wt.Take()
		for _, f := range frames {
			if finished {
				break // nothing follows a terminal frame
			}
			typ, terminal, isErr := inspect(x.op, x.req.includeUsage, f)
			if err := sw.frame(f, typ); err != nil {
				x.goneStreaming(sw, r)
				return
			}
			x.frameSent()
			x.status = http.StatusOK
			if terminal {
				finished = true
				if isErr {
					x.errCode = frameErrorCode(f)
				}
				if !isErr && x.op != llmapi.OpResponses {
					_ = sw.done() // the client may be gone; the stream is over either way
				}
			}
		}
		if finished {
			return
		}
		if failure != nil {
			x.streamFail(sw, failure.Status, failure.Body().Error)
			return
		}
		if r != nil && resp == nil {
			resp = r
			if resp.IsError() {
				// Chunks travel on another event name: give ones still in
				// flight a moment, then answer with the error.
				graceTimer = time.NewTimer(x.s.cfg.ErrorGrace)
				grace = graceTimer.C
			}
			// On success keep waiting for the remaining chunks.
		}
		select {
		case <-x.wt.Notify():
		case <-grace:
			if !sw.started {
				x.status, x.errCode = resp.StatusCode, responseErrorCode(resp)
				writeAnswer(x.w, resp)
				return
			}
			x.streamFail(sw, resp.StatusCode, responseError(resp))
			return
		case <-timer.C:
			e := llmapi.NewError(http.StatusGatewayTimeout, llmapi.TypeTimeout, "timeout", "",
				fmt.Sprintf("The execution worker did not finish the stream within %s.", x.s.cfg.Timeout))
			x.streamFail(sw, e.Status, e.Body().Error)
			if resp == nil {
				x.publishCancel(llmapi.ReasonTimeout)
			}
			return
		case <-x.r.Context().Done():
			x.goneStreaming(sw, resp)
			return
		}
	}
}

// streamFail ends the stream with an error: a JSON error answer when no
// frame went out yet, else an error frame.
func (x *exchange) streamFail(sw *sseWriter, status int, e llmapi.ErrorObject) {
	x.errCode = "upstream_error"
	if e.Code != nil {
		x.errCode = *e.Code
	}
	if !sw.started {
		x.status = status
		b, _ := json.Marshal(llmapi.ErrorBody{Error: e}) // strings and pointers to strings always encode
		writeRaw(x.w, status, b)
		return
	}
	typ := ""
	if x.op == llmapi.OpResponses {
		typ = "error"
	}
	_ = sw.frame(errorFrame(x.op, e), typ) // the client may be gone; the stream is over either way
}

// goneStreaming handles a streaming client that went away, or a shutdown
// that ran out of time (the client then gets an error); the worker is
// cancelled unless it already answered.
func (x *exchange) goneStreaming(sw *sseWriter, resp *llmapi.ExecutionEventResponse) {
	if x.s.hardStop.Err() != nil {
		e := llmapi.NewError(http.StatusServiceUnavailable, "", "shutting_down", "", "The server shut down before the stream finished; retry.")
		x.streamFail(sw, e.Status, e.Body().Error)
		if resp == nil {
			x.publishCancel(llmapi.ReasonTimeout)
		}
		return
	}
	x.errCode = "client_closed" // for the log only; the status stays what was sent
	if !sw.started {
		x.status = 499
	}
	if resp == nil {
		x.publishCancel(llmapi.ReasonClientDisconnected)
	}
}

// streamWriteGrace is how long past the request deadline a stream may
// still be written (the timeout frame).
const streamWriteGrace = 5 * time.Second

// frameErrorCode is the error code of an error frame, for the log.
func frameErrorCode(f json.RawMessage) string {
	var fe struct {
		Code  *string `json:"code"`
		Error struct {
			Code *string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(f, &fe) // inspect already parsed it
	switch {
	case fe.Error.Code != nil:
		return *fe.Error.Code
	case fe.Code != nil:
		return *fe.Code
	}
	return "upstream_error"
}
