package frontdoor

import (
	"context"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// This file holds the front door's part of usage and entitlements: the
// admission of an execution request before it is published
// (Config.Entitlements), the charge of its exact token usage before its
// answer goes out, the usage record handed to Config.Usage once it is
// answered, and GET /v1/usage.

// chargeTimeout bounds charging a request's tokens.
const chargeTimeout = 5 * time.Second

// admit checks the caller's entitlements for a request on model: it sets
// the x-ratelimit-* headers and, when the request may not run, answers
// 403 or 429 (with retry-after) and returns false.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, identity, model string) bool {
	if s.cfg.Entitlements == nil {
		return true
	}
	d := s.cfg.Entitlements.Admit(r.Context(), identity, model)
	d.SetHeaders(w.Header())
	if d.Err != nil {
		writeError(w, d.Err)
		s.log.InfoContext(r.Context(), "request refused", "identity", identity, "model", model, "status", d.Err.Status, "error", d.Err.Code)
		return false
	}
	return true
}

// charge adds the exact tokens of resp to the caller's token budgets,
// once; the non-streaming path charges before it answers, so the caller's
// next request already sees the budget spent.
func (x *exchange) charge(resp *llmapi.ExecutionEventResponse) {
	if x.s.cfg.Entitlements == nil || x.charged || resp == nil {
		return
	}
	x.charged = true
	tokens := usage.TokensOf(resp.Usage).Total
	ctx, cancel := context.WithTimeout(context.WithoutCancel(x.r.Context()), chargeTimeout)
	defer cancel()
	if err := x.s.cfg.Entitlements.Charge(ctx, x.identity, tokens); err != nil {
		x.s.log.Error("token charge failed", "request_id", x.id, "identity", x.identity, "tokens", tokens, "err", err)
	}
}

// settle runs once an execution request is answered: a stream that ended
// before its response event arrived waits for it (the caller already has
// every frame and may have closed the connection, which ends the request
// context but not this wait; the deadline and a forced shutdown do), then
// the tokens are charged, counted in the metrics, and the usage record is
// queued.
func (x *exchange) settle() {
	if x.s.cfg.Usage == nil && x.s.cfg.Entitlements == nil && x.s.cfg.Metrics == nil {
		return
	}
	_, resp, _ := x.wt.Take()
	if resp == nil && x.req.stream && x.status == http.StatusOK {
		resp = x.awaitResponse()
	}
	if resp != nil {
		x.obs.usage = resp.Usage
	}
	x.charge(resp)
	if x.s.cfg.Usage == nil {
		return
	}
	rec := usage.Record{
		RequestID: x.id, Time: time.Now(), Identity: x.identity, Model: x.req.model, Operation: string(x.op),
		Status: x.status, DurationMS: time.Since(x.start).Milliseconds(),
	}
	if resp != nil {
		rec.Tokens = usage.TokensOf(resp.Usage)
	}
	x.s.cfg.Usage.Add(rec) // never blocks; a full queue drops and counts
}

// awaitResponse waits for the response event of a finished stream.
func (x *exchange) awaitResponse() *llmapi.ExecutionEventResponse {
	if !time.Now().Before(x.deadline) {
		return nil // the stream timed out: no answer is coming
	}
	timer := time.NewTimer(time.Until(x.deadline))
	defer timer.Stop()
	for {
		if _, resp, failure := x.wt.Take(); resp != nil || failure != nil {
			return resp
		}
		select {
		case <-x.wt.Notify():
		case <-timer.C:
			x.s.log.Warn("stream ended without its response event; usage not known", "request_id", x.id)
			return nil
		case <-x.s.hardStop.Done():
			return nil
		}
	}
}

// handleUsage answers GET /v1/usage: a token with llm:admin reads every
// identity's usage, one with llm:proxy only its own.
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	claims, apiErr := s.authorize(r, "")
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	admin := claims.HasScope(auth.ScopeLLMAdmin)
	if !admin && !claims.HasScope(llmapi.Scope) {
		writeError(w, llmapi.NewError(http.StatusForbidden, llmapi.TypePermission, "insufficient_scope", "",
			"Reading usage needs a token with the scope "+llmapi.Scope+" (your own usage) or "+auth.ScopeLLMAdmin+" (everyone's)."))
		return
	}
	if s.cfg.Usage == nil {
		writeError(w, llmapi.NewError(http.StatusNotFound, llmapi.TypeInvalidRequest, "usage_not_recorded", "",
			"This front door does not record usage (--usage-backend none)."))
		return
	}
	usage.NewHandler(s.cfg.Usage).Serve(w, r, usage.Caller{Identity: claims.Subject, Admin: admin})
}
