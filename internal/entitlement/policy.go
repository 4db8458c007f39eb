// Package entitlement decides whether a caller may run a request at the
// REST front door: a Policy (a JSON file, with environment overrides of its
// defaults) gives identities and groups of identities limits — tokens per
// UTC day and per UTC month, requests per minute, allowed model ids — and
// an Enforcer checks them before a request is published and charges the
// exact token usage after it is answered, on counters kept in a Store:
// memory for one front door, Redis or PostgreSQL for several replicas.
//
// A token budget is checked before a request and charged after it, from
// its exact usage: the request that crosses the budget is answered, the
// next one is refused. Requests per minute are counted at admission,
// atomically, so replicas sharing a Store never admit more than the limit.
//
// It imports internal/busconfig, pkg/llmapi and the Redis and PostgreSQL
// drivers.
package entitlement

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

// Limits are what a policy entry sets. A nil field is not set (the next
// entry decides); 0 means unlimited. AllowedModels lists catalog model ids
// or patterns ("codex-*", "*" for all); an empty list allows none.
type Limits struct {
	TokensPerDay      *int64   `json:"tokens_per_day,omitempty"`
	TokensPerMonth    *int64   `json:"tokens_per_month,omitempty"`
	RequestsPerMinute *int64   `json:"requests_per_minute,omitempty"`
	AllowedModels     []string `json:"allowed_models,omitempty"`
}

// Group gives its members limits (each member has their own counters).
type Group struct {
	// Name names the group in messages.
	Name string `json:"name"`
	// Members are identities (JWT subs).
	Members []string `json:"members"`
	Limits
}

// Policy is the entitlement policy. For each limit, an identity gets the
// value of its own entry in Identities if that sets it, else of the first
// group (in file order) that lists it and sets it, else of Defaults, else
// no limit.
type Policy struct {
	// Defaults apply to every identity.
	Defaults Limits `json:"defaults"`
	// Groups, in order of precedence.
	Groups []Group `json:"groups,omitempty"`
	// Identities are per-identity entries, by JWT sub.
	Identities map[string]Limits `json:"identities,omitempty"`
}

// Environment variables that override the policy's defaults.
const (
	EnvTokensPerDay      = "BUS_LLM_DEFAULT_TOKENS_PER_DAY"
	EnvTokensPerMonth    = "BUS_LLM_DEFAULT_TOKENS_PER_MONTH"
	EnvRequestsPerMinute = "BUS_LLM_DEFAULT_REQUESTS_PER_MINUTE"
	EnvAllowedModels     = "BUS_LLM_DEFAULT_ALLOWED_MODELS"
)

// EnvVars lists the override variables.
func EnvVars() []string {
	return []string{EnvTokensPerDay, EnvTokensPerMonth, EnvRequestsPerMinute, EnvAllowedModels}
}

// Load reads the policy file at path.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("entitlements file: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("entitlements file %s: %w", path, err)
	}
	return p, nil
}

// Parse reads a policy document; unknown fields are errors (a misspelt
// limit must not silently mean "no limit").
func Parse(b []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("not a valid policy: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a valid policy: data after the JSON object")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks the policy: no negative limit, valid model patterns,
// named groups with members, non-empty identities.
func (p *Policy) Validate() error {
	if err := p.Defaults.validate("defaults"); err != nil {
		return err
	}
	names := map[string]bool{}
	for i, g := range p.Groups {
		where := fmt.Sprintf("groups[%d]", i)
		switch {
		case strings.TrimSpace(g.Name) == "":
			return fmt.Errorf("%s: name is required", where)
		case names[g.Name]:
			return fmt.Errorf("%s: group %q is defined twice", where, g.Name)
		case len(g.Members) == 0:
			return fmt.Errorf("group %q has no members", g.Name)
		case slices.Contains(g.Members, ""):
			return fmt.Errorf("group %q lists an empty member", g.Name)
		}
		names[g.Name] = true
		if err := g.Limits.validate("group " + strconv.Quote(g.Name)); err != nil {
			return err
		}
	}
	for id, l := range p.Identities {
		if id == "" {
			return errors.New("identities: an empty identity")
		}
		if err := l.validate("identity " + strconv.Quote(id)); err != nil {
			return err
		}
	}
	return nil
}

func (l Limits) validate(where string) error {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"tokens_per_day", l.TokensPerDay}, {"tokens_per_month", l.TokensPerMonth}, {"requests_per_minute", l.RequestsPerMinute}} {
		if f.v != nil && *f.v < 0 {
			return fmt.Errorf("%s: %s must be 0 (unlimited) or more, not %d", where, f.name, *f.v)
		}
	}
	for _, m := range l.AllowedModels {
		if _, err := path.Match(m, ""); err != nil || m == "" {
			return fmt.Errorf("%s: allowed_models: %q is not a model id or pattern", where, m)
		}
	}
	return nil
}

// ApplyEnv overrides the defaults with BUS_LLM_DEFAULT_TOKENS_PER_DAY,
// _TOKENS_PER_MONTH, _REQUESTS_PER_MINUTE (numbers, 0 = unlimited) and
// _ALLOWED_MODELS (comma-separated ids or patterns) when they are set.
func (p *Policy) ApplyEnv(env busconfig.Env) error {
	for _, f := range []struct {
		key string
		dst **int64
	}{{EnvTokensPerDay, &p.Defaults.TokensPerDay}, {EnvTokensPerMonth, &p.Defaults.TokensPerMonth}, {EnvRequestsPerMinute, &p.Defaults.RequestsPerMinute}} {
		v := strings.TrimSpace(env.Getenv(f.key))
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%s=%q: want 0 (unlimited) or a positive number", f.key, v)
		}
		*f.dst = &n
	}
	if v := strings.TrimSpace(env.Getenv(EnvAllowedModels)); v != "" {
		var models []string
		for m := range strings.SplitSeq(v, ",") {
			if m = strings.TrimSpace(m); m != "" {
				models = append(models, m)
			}
		}
		if len(models) == 0 {
			return fmt.Errorf("%s=%q names no model", EnvAllowedModels, v)
		}
		p.Defaults.AllowedModels = models
	}
	return p.Defaults.validate("environment")
}

// Effective are the limits that apply to one identity; 0 is unlimited.
type Effective struct {
	TokensPerDay      int64
	TokensPerMonth    int64
	RequestsPerMinute int64
	// AllowedModels are ids or patterns; nil allows every model.
	AllowedModels []string
}

// For returns identity's effective limits.
func (p *Policy) For(identity string) Effective {
	layers := make([]Limits, 0, 4)
	if l, ok := p.Identities[identity]; ok {
		layers = append(layers, l)
	}
	for _, g := range p.Groups {
		if slices.Contains(g.Members, identity) {
			layers = append(layers, g.Limits)
		}
	}
	layers = append(layers, p.Defaults)
	var e Effective
	pick := func(get func(Limits) *int64) int64 {
		for _, l := range layers {
			if v := get(l); v != nil {
				return *v
			}
		}
		return 0
	}
	e.TokensPerDay = pick(func(l Limits) *int64 { return l.TokensPerDay })
	e.TokensPerMonth = pick(func(l Limits) *int64 { return l.TokensPerMonth })
	e.RequestsPerMinute = pick(func(l Limits) *int64 { return l.RequestsPerMinute })
	for _, l := range layers {
		if l.AllowedModels != nil {
			e.AllowedModels = l.AllowedModels
			break
		}
	}
	return e
}

// Allows reports whether model may be used.
func (e Effective) Allows(model string) bool {
	if e.AllowedModels == nil {
		return true
	}
	for _, m := range e.AllowedModels {
		if ok, _ := path.Match(m, model); ok {
			return true
		}
	}
	return false
}
