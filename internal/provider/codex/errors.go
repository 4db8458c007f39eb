package codex

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/busdk/bus-integration-codex/pkg/appserver"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

var urlRE = regexp.MustCompile(`https?://\S+`)

// redact removes URLs (which may name internal hosts) from upstream text.
func redact(s string) string { return strings.TrimSpace(urlRE.ReplaceAllString(s, "[url]")) }

// mapError turns a Codex failure into the OpenAI error the client sees;
// the caller's own cancellation and deadline pass through unchanged.
func mapError(ctx context.Context, err error) error {
	var te *appserver.TurnError
	var apiErr *llmapi.APIError
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return err
	case errors.Is(err, appserver.ErrNotInstalled):
		return llmapi.NewError(http.StatusServiceUnavailable, llmapi.TypeUnavailable, "codex_not_installed", "", "the codex command is not installed on this worker")
	case errors.Is(err, appserver.ErrProcessExited), errors.Is(err, appserver.ErrClosed):
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "codex_process_exited", "", "the Codex App Server process exited while running the request; retry it")
	case errors.Is(err, appserver.ErrTurnInterrupted):
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "turn_interrupted", "", "the Codex turn was interrupted")
	case !errors.As(err, &te):
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "codex_error", "", "Codex App Server error: "+redact(err.Error()))
	}
	status := te.HTTPStatus
	switch {
	case te.Kind == appserver.KindUnauthorized || status == http.StatusUnauthorized || status == http.StatusForbidden:
		return llmapi.NewError(http.StatusServiceUnavailable, llmapi.TypeUnavailable, "codex_unauthorized",
			"", "the model provider rejected this worker's Codex credentials; the operator must run `codex login`")
	case te.Kind == appserver.KindUsageLimitExceeded:
		return llmapi.NewError(http.StatusTooManyRequests, llmapi.TypeRateLimit, "insufficient_quota", "", "the Codex account's usage limit is exhausted: "+redact(te.Message))
	case te.Kind == appserver.KindRateLimitExceeded || status == http.StatusTooManyRequests:
		return llmapi.NewError(http.StatusTooManyRequests, llmapi.TypeRateLimit, "rate_limit_exceeded", "", "the model provider is rate limiting requests; retry later")
	case te.Kind == appserver.KindServerOverloaded:
		return llmapi.NewError(http.StatusServiceUnavailable, llmapi.TypeUnavailable, "server_overloaded", "", "the model provider is overloaded; retry later")
	case te.Kind == appserver.KindContextWindowExceeded:
		return llmapi.NewError(http.StatusBadRequest, llmapi.TypeInvalidRequest, "context_length_exceeded", "messages", "the conversation does not fit the model's context window")
	case te.Kind == appserver.KindBioPolicy || te.Kind == appserver.KindCyberPolicy:
		return llmapi.NewError(http.StatusBadRequest, llmapi.TypeInvalidRequest, "content_policy_violation", "", "the model provider refused the request: "+redact(te.Message))
	case te.Kind == appserver.KindModelNotFound || status == http.StatusNotFound:
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "upstream_model_not_found", "", "the Codex model configured on this worker was not found")
	case te.Kind == appserver.KindBadRequest || status == http.StatusBadRequest:
		return llmapi.NewError(http.StatusBadRequest, llmapi.TypeInvalidRequest, "upstream_bad_request", "", "the model provider rejected the request: "+redact(te.Message))
	case te.Kind == appserver.KindInternalServerError || status >= 500:
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "upstream_error", "", "the model provider failed; retry later")
	default:
		return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "turn_failed", "", "the Codex turn failed: "+redact(te.Message))
	}
}
