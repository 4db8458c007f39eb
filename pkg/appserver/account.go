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
