package appserver

import (
	"context"
	"encoding/json"
	"fmt"
)

// AccountStatus is the answer of account/read: which credentials Codex
// would use, without exposing them.
type AccountStatus struct {
	// RequiresOpenAIAuth is true when the configured model provider needs
	// OpenAI credentials (ChatGPT login or API key). A custom provider
	// (e.g. the test fake) reports false.
	RequiresOpenAIAuth bool
	// Type is the account type: "apiKey", "chatgpt", "amazonBedrock",
	// "gcp", or "" when not logged in.
	Type string
	// Email and PlanType are set for ChatGPT accounts.
	Email    string
	PlanType string
	// Raw is the full result JSON. It holds account identifiers; treat it
	// as sensitive.
	Raw json.RawMessage
}

// LoggedIn reports whether Codex has an account (any type).
func (a *AccountStatus) LoggedIn() bool { return a.Type != "" }

// Ready reports whether Codex can serve turns as far as credentials go:
// logged in, or the provider needs no OpenAI auth.
func (a *AccountStatus) Ready() bool { return a.LoggedIn() || !a.RequiresOpenAIAuth }

// Account asks the app-server (account/read) whether Codex is logged in.
func (p *Process) Account(ctx context.Context) (*AccountStatus, error) {
	var raw json.RawMessage
	if err := p.Call(ctx, "account/read", map[string]any{"refreshToken": false}, &raw); err != nil {
		return nil, err
	}
	var r struct {
		RequiresOpenAIAuth bool `json:"requiresOpenaiAuth"`
		Account            *struct {
			Type     string  `json:"type"`
			Email    *string `json:"email"`
			PlanType string  `json:"planType"`
		} `json:"account"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("appserver: account/read: decode: %w", err)
	}
	st := &AccountStatus{RequiresOpenAIAuth: r.RequiresOpenAIAuth, Raw: raw}
	if r.Account != nil {
		st.Type, st.PlanType = r.Account.Type, r.Account.PlanType
		if r.Account.Email != nil {
			st.Email = *r.Account.Email
		}
	}
	return st, nil
}

// RateLimitWindow is one usage window of an account (RateLimitWindow).
type RateLimitWindow struct {
	// UsedPercent is how much of the window is used (100 = exhausted).
	UsedPercent int `json:"usedPercent"`
	// WindowDurationMins is the window's length, when known.
	WindowDurationMins *int64 `json:"windowDurationMins,omitempty"`
	// ResetsAt is when the window resets (Unix seconds), when known.
	ResetsAt *int64 `json:"resetsAt,omitempty"`
}

// RateLimits is an account's rate-limit state (RateLimitSnapshot): the
// primary (short) and secondary (long) usage windows of one limit family.
// Codex reports it on account/rateLimits/read and, after every model
// response, as an account/rateLimits/updated notification (sparse: absent
// values are unknown, not cleared).
type RateLimits struct {
	LimitID   *string          `json:"limitId,omitempty"`
	LimitName *string          `json:"limitName,omitempty"`
	Primary   *RateLimitWindow `json:"primary,omitempty"`
	Secondary *RateLimitWindow `json:"secondary,omitempty"`
	Credits   *struct {
		HasCredits bool    `json:"hasCredits"`
		Unlimited  bool    `json:"unlimited"`
		Balance    *string `json:"balance,omitempty"`
	} `json:"credits,omitempty"`
	PlanType             *string `json:"planType,omitempty"`
	RateLimitReachedType *string `json:"rateLimitReachedType,omitempty"`
}

// Merge returns r updated with the values u carries (a sparse update).
func (r RateLimits) Merge(u RateLimits) RateLimits {
	if u.LimitID != nil {
		r.LimitID = u.LimitID
	}
	if u.LimitName != nil {
		r.LimitName = u.LimitName
	}
	if u.Primary != nil {
		r.Primary = u.Primary
	}
	if u.Secondary != nil {
		r.Secondary = u.Secondary
	}
	if u.Credits != nil {
		r.Credits = u.Credits
	}
	if u.PlanType != nil {
		r.PlanType = u.PlanType
	}
	if u.RateLimitReachedType != nil {
		r.RateLimitReachedType = u.RateLimitReachedType
	}
	return r
}

// RateLimits asks the app-server for the account's rate-limit state
// (account/rateLimits/read). It fails without a Codex login.
func (p *Process) RateLimits(ctx context.Context) (*RateLimits, error) {
	var r struct {
		RateLimits RateLimits `json:"rateLimits"`
	}
	if err := p.Call(ctx, "account/rateLimits/read", nil, &r); err != nil {
		return nil, err
	}
	return &r.RateLimits, nil
}
