package entitlement

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// DefaultTimeout bounds one admission or charge on the store.
const DefaultTimeout = 5 * time.Second

// counterSlack keeps a counter a little past its window's end (clock skew
// between replicas).
const counterSlack = time.Hour

// Options configure an Enforcer.
type Options struct {
	// Timeout bounds each store call (DefaultTimeout when 0).
	Timeout time.Duration
	// Logger receives store failures (slog.Default when nil).
	Logger *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Enforcer applies a Policy with counters in a Store. It is safe for
// concurrent use.
type Enforcer struct {
	policy  *Policy
	store   Store
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
}

// New returns an Enforcer of p on s.
func New(p *Policy, s Store, o Options) *Enforcer {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Enforcer{policy: p, store: s, timeout: o.Timeout, log: o.Logger, now: o.Now}
}

// Policy is the policy the Enforcer applies.
func (e *Enforcer) Policy() *Policy { return e.policy }

// Window is the state of one limit, as the x-ratelimit-* headers report it.
type Window struct {
	// Limit is the limit.
	Limit int64
	// Remaining is what is left of it (never negative).
	Remaining int64
	// Reset is how long until the window starts afresh.
	Reset time.Duration
}

// Decision is the outcome of an admission.
type Decision struct {
	// Err is nil when the request may run; otherwise the answer: 403
	// model_not_allowed, 429 rate_limit_exceeded, or 503 when the
	// counters cannot be read.
	Err *llmapi.APIError
	// Requests is the requests-per-minute window (nil without that limit).
	Requests *Window
	// Tokens is the token budget with the least left (nil without one).
	Tokens *Window
	// RetryAfter is when a refused request may succeed (429 only).
	RetryAfter time.Duration
}

// window names a counter's window.
type window struct {
	kind  string // "requests per minute", "tokens per day", "tokens per month"
	tag   string // key part
	id    string // the window's id, e.g. "2024-05-01"
	start time.Time
	end   time.Time
}

func minuteOf(t time.Time) window {
	s := t.UTC().Truncate(time.Minute)
	return window{"requests per minute", "rpm", s.Format("2006-01-02T15:04"), s, s.Add(time.Minute)}
}

func dayOf(t time.Time) window {
	u := t.UTC()
	s := time.Date(u.Year(), u.Month(), u.Day(), 0, 0, 0, 0, time.UTC)
	return window{"tokens per day", "tpd", s.Format(time.DateOnly), s, s.AddDate(0, 0, 1)}
}

func monthOf(t time.Time) window {
	u := t.UTC()
	s := time.Date(u.Year(), u.Month(), 1, 0, 0, 0, 0, time.UTC)
	return window{"tokens per month", "tpm", s.Format("2006-01"), s, s.AddDate(0, 1, 0)}
}

// key is the counter key of identity in w. The identity is hashed (keys
// stay short and safe whatever a sub contains) inside a Redis hash tag.
func key(identity string, w window) string {
	sum := sha256.Sum256([]byte(identity))
	return "{" + hex.EncodeToString(sum[:16]) + "}:" + w.tag + ":" + w.id
}

// limited is one limit that applies to a request.
type limited struct {
	w     window
	limit int64
}

// tokenLimits are identity's token budgets now.
func tokenLimits(eff Effective, now time.Time) []limited {
	var out []limited
	if eff.TokensPerDay > 0 {
		out = append(out, limited{dayOf(now), eff.TokensPerDay})
	}
	if eff.TokensPerMonth > 0 {
		out = append(out, limited{monthOf(now), eff.TokensPerMonth})
	}
	return out
}

// Admit decides whether identity may run a request on model, and counts
// it against the requests-per-minute limit when it may. Identities
// without counted limits cost no store round trip.
func (e *Enforcer) Admit(ctx context.Context, identity, model string) Decision {
	eff := e.policy.For(identity)
	if !eff.Allows(model) {
		return Decision{Err: llmapi.NewError(http.StatusForbidden, llmapi.TypePermission, "model_not_allowed", "model",
			fmt.Sprintf("The model `%s` is not among the models identity %s may use.", model, identity))}
	}
	now := e.now()
	lims := tokenLimits(eff, now)
	if eff.RequestsPerMinute > 0 {
		lims = append(lims, limited{minuteOf(now), eff.RequestsPerMinute})
	}
	if len(lims) == 0 {
		return Decision{}
	}
	cs := make([]Counter, len(lims))
	for i, l := range lims {
		cs[i] = Counter{Key: key(identity, l.w), Limit: l.limit, Expires: l.w.end.Add(counterSlack)}
		if l.w.tag == "rpm" {
			cs[i].Cost = 1
		}
	}
	sctx, cancel := context.WithTimeout(ctx, e.timeout)
	values, refused, err := e.store.Admit(sctx, cs)
	cancel()
	if err != nil {
		e.log.Error("entitlement counters unavailable; request refused", "identity", identity, "err", err)
		return Decision{Err: llmapi.NewError(http.StatusServiceUnavailable, "", "entitlements_unavailable", "",
			"The usage limits cannot be checked right now; retry shortly.")}
	}
	var d Decision
	for i, l := range lims {
		w := &Window{Limit: l.limit, Remaining: max(l.limit-values[i], 0), Reset: l.w.end.Sub(now)}
		if l.w.tag == "rpm" {
			d.Requests = w
		} else if d.Tokens == nil || w.Remaining < d.Tokens.Remaining {
			d.Tokens = w
		}
	}
	if refused >= 0 {
		l := lims[refused]
		d.RetryAfter = l.w.end.Sub(now)
		d.Err = llmapi.NewError(http.StatusTooManyRequests, llmapi.TypeRateLimit, "rate_limit_exceeded", "",
			fmt.Sprintf("Rate limit reached for identity %s on %s: Limit %d, Used %d. Please try again in %s.",
				identity, l.w.kind, l.limit, values[refused], roundUp(d.RetryAfter, time.Second)))
	}
	return d
}

// Charge adds tokens, the exact usage of an answered request, to
// identity's token budgets (nothing when it has none).
func (e *Enforcer) Charge(ctx context.Context, identity string, tokens int64) error {
	if tokens <= 0 {
		return nil
	}
	lims := tokenLimits(e.policy.For(identity), e.now())
	if len(lims) == 0 {
		return nil
	}
	cs := make([]Counter, len(lims))
	for i, l := range lims {
		cs[i] = Counter{Key: key(identity, l.w), Cost: tokens, Expires: l.w.end.Add(counterSlack)}
	}
	sctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	if err := e.store.Add(sctx, cs); err != nil {
		return fmt.Errorf("entitlement: charge %d tokens: %w", tokens, err)
	}
	return nil
}

// maxRetryable is the longest retry-after a client should wait out by
// itself; beyond it the answer says x-should-retry: false.
const maxRetryable = time.Minute

// SetHeaders sets OpenAI's rate-limit headers for d on h:
// x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the limits
// that apply, and on a 429 retry-after (seconds), retry-after-ms and,
// when the wait is longer than a minute, x-should-retry: false (the
// OpenAI SDKs then do not retry by themselves).
func (d Decision) SetHeaders(h http.Header) {
	for _, w := range []struct {
		suffix string
		w      *Window
	}{{"requests", d.Requests}, {"tokens", d.Tokens}} {
		if w.w == nil {
			continue
		}
		h.Set("x-ratelimit-limit-"+w.suffix, strconv.FormatInt(w.w.Limit, 10))
		h.Set("x-ratelimit-remaining-"+w.suffix, strconv.FormatInt(w.w.Remaining, 10))
		h.Set("x-ratelimit-reset-"+w.suffix, roundUp(w.w.Reset, time.Millisecond).String())
	}
	if d.Err != nil && d.Err.Status == http.StatusTooManyRequests {
		secs := int64(math.Ceil(d.RetryAfter.Seconds()))
		h.Set("retry-after", strconv.FormatInt(max(secs, 1), 10))
		h.Set("retry-after-ms", strconv.FormatInt(max(roundUp(d.RetryAfter, time.Millisecond).Milliseconds(), 1), 10))
		if d.RetryAfter > maxRetryable {
			h.Set("x-should-retry", "false")
		}
	}
}

// roundUp rounds d up to a multiple of unit.
func roundUp(d, unit time.Duration) time.Duration {
	if r := d % unit; r != 0 {
		d += unit - r
	}
	return d
}
