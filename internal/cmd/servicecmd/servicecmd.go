// Package servicecmd is the start-up wiring the service commands
// (bus-integration-codex, bus-api-provider-llm, and for its observability
// bus-api-provider-events) share: their tracing and metrics registry
// (Observe); the service token they present to the Events API (from
// BUS_API_TOKEN, or from the file in BUS_API_TOKEN_FILE, read again when
// it changes; a token signed with a secret the process holds is renewed
// before it expires); the Events API client with BusDK's listener retry
// policy (its requests carry the traceparent of their context); and
// one-line errors when the Events API refuses the token or cannot be
// reached.
//
// It may import pkg/events, internal/auth, internal/cliutil, internal/busconfig, internal/metrics and internal/tracing.
package servicecmd

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/tracing"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// TokenVar holds a service's Events API token. It is read from the
// environment only, never from a flag (TokenFileVar names a file instead).
const TokenVar = "BUS_API_TOKEN"

// TokenHint is the one-line example of how to provide the token: on one
// machine the local identity is a service; elsewhere service tokens carry
// the bus:service scope (README "Safety").
const TokenHint = TokenVar + `="$(bus operator token issue --local --scope llm:proxy --format token)" (on several hosts: --subject <service> --scope "llm:proxy bus:service")`

// Events is a service's Events API connection.
type Events struct {
	// Client carries the service token.
	Client *events.Client
	// URL is the Events API base URL.
	URL string
	// Close releases the client's idle connections.
	Close func()
	// TokenExpiry returns when the token in use expires (zero: unknown).
	TokenExpiry func() time.Time
	// TokenFrom says where the token comes from (for logs; never the
	// token).
	TokenFrom string
}

// Connect builds the Events API client of a service: the token from the
// environment or the token file (who names the service in errors), the
// retry policy from BUS_EVENTS_LISTENER_RETRY*, and a transport of its own
// so the connections can be closed on the way out.
func Connect(env busconfig.Env, url, who string, log *slog.Logger) (*Events, error) {
	src, from, err := newTokenSource(env, who, log)
	if err != nil {
		return nil, err
	}
	retry, err := events.RetryFromEnv(env)
	if err != nil {
		return nil, cliutil.Usagef("%v", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost = 256, 256
	client, err := events.NewClient(url, events.WithTokenSource(src.Token), events.WithRetry(retry), events.WithLogger(log),
		events.WithHTTPClient(&http.Client{Transport: tracing.Transport(transport)}))
	if err != nil {
		return nil, cliutil.Usagef("--events-url: %v", err)
	}
	return &Events{Client: client, URL: client.BaseURL(), Close: transport.CloseIdleConnections, TokenExpiry: src.Expiry, TokenFrom: from}, nil
}

// Explain turns the error that stopped a service into its one-line
// message: the Events API refused the token, or could not be reached
// within the connect timeout; other errors pass unchanged.
func (e *Events) Explain(err error) error {
	if apiErr, ok := errors.AsType[*events.APIError](err); ok &&
		(apiErr.Status == http.StatusUnauthorized || apiErr.Status == http.StatusForbidden) {
		return fmt.Errorf("the Events API at %s refused the service token in %s (%d %s): %s", e.URL, e.TokenFrom, apiErr.Status, apiErr.Code, apiErr.Message)
	}
	if errors.Is(err, events.ErrUnreachable) {
		return fmt.Errorf("the Events API could not be reached within the connect timeout: %w", err)
	}
	return err
}
