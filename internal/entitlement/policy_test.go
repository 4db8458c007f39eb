package entitlement_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/entitlement"
)

const examplePolicy = `{
  "defaults": {"tokens_per_day": 100000, "requests_per_minute": 20, "allowed_models": ["codex-chatgpt"]},
  "groups": [
    {"name": "engineers", "members": ["alice", "bob"], "tokens_per_month": 5000000, "allowed_models": ["codex-*"]},
    {"name": "interns", "members": ["bob", "erin"], "tokens_per_day": 1000, "requests_per_minute": 5}
  ],
  "identities": {
    "alice": {"tokens_per_day": 0},
    "ci-bot": {"requests_per_minute": 120, "allowed_models": []}
  }
}`

func TestPolicyFor(t *testing.T) {
	p, err := entitlement.Parse([]byte(examplePolicy))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		identity string
		want     entitlement.Effective
	}{
		// Her own entry lifts the daily budget; the group gives the rest.
		{"alice", entitlement.Effective{TokensPerDay: 0, TokensPerMonth: 5000000, RequestsPerMinute: 20, AllowedModels: []string{"codex-*"}}},
		// The first group that sets a limit wins; later groups fill in.
		{"bob", entitlement.Effective{TokensPerDay: 1000, TokensPerMonth: 5000000, RequestsPerMinute: 5, AllowedModels: []string{"codex-*"}}},
		{"erin", entitlement.Effective{TokensPerDay: 1000, RequestsPerMinute: 5, AllowedModels: []string{"codex-chatgpt"}}},
		{"ci-bot", entitlement.Effective{TokensPerDay: 100000, RequestsPerMinute: 120, AllowedModels: []string{}}},
		{"anyone", entitlement.Effective{TokensPerDay: 100000, RequestsPerMinute: 20, AllowedModels: []string{"codex-chatgpt"}}},
	} {
		if got := p.For(tc.identity); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("For(%s) = %+v, want %+v", tc.identity, got, tc.want)
		}
	}
	if got := (&entitlement.Policy{}).For("x"); !reflect.DeepEqual(got, entitlement.Effective{}) {
		t.Errorf("empty policy: %+v", got)
	}
}

func TestEffectiveAllows(t *testing.T) {
	for _, tc := range []struct {
		allowed []string
		model   string
		want    bool
	}{
		{nil, "anything", true},
		{[]string{}, "codex-chatgpt", false},
		{[]string{"codex-chatgpt"}, "codex-chatgpt", true},
		{[]string{"codex-chatgpt"}, "codex-agent", false},
		{[]string{"codex-*"}, "codex-agent", true},
		{[]string{"codex-*"}, "gpt-5", false},
		{[]string{"*"}, "gpt-5", true},
		{[]string{"a", "gpt-?"}, "gpt-5", true},
	} {
		if got := (entitlement.Effective{AllowedModels: tc.allowed}).Allows(tc.model); got != tc.want {
			t.Errorf("%q allows %s = %v", tc.allowed, tc.model, got)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"defaults": {"tokens_per_dya": 5}}`, "unknown field"},
		{`{"defaults": {"tokens_per_day": -1}}`, "tokens_per_day must be 0"},
		{`{"defaults": {"tokens_per_day": "5"}}`, "not a valid policy"},
		{`{"identities": {"a": {"requests_per_minute": -2}}}`, "identity \"a\""},
		{`{"identities": {"": {}}}`, "empty identity"},
		{`{"groups": [{"members": ["a"]}]}`, "name is required"},
		{`{"groups": [{"name": "g"}]}`, "no members"},
		{`{"groups": [{"name": "g", "members": ["a"]}, {"name": "g", "members": ["b"]}]}`, "defined twice"},
		{`{"groups": [{"name": "g", "members": [""]}]}`, "empty member"},
		{`{"defaults": {"allowed_models": ["codex-["]}}`, "not a model id or pattern"},
		{`{} {}`, "after the JSON object"},
		{`[]`, "not a valid policy"},
	} {
		_, err := entitlement.Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error with %q", tc.doc, err, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "entitlements.json")
	if err := os.WriteFile(path, []byte(examplePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := entitlement.Load(path)
	if err != nil || len(p.Groups) != 2 {
		t.Fatalf("%+v, %v", p, err)
	}
	if _, err := entitlement.Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("a missing file loaded")
	}
	if err := os.WriteFile(path, []byte(`{"defaults": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := entitlement.Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a bad file: %v", err)
	}
}

func TestApplyEnv(t *testing.T) {
	p, err := entitlement.Parse([]byte(examplePolicy))
	if err != nil {
		t.Fatal(err)
	}
	err = p.ApplyEnv(busconfig.MapEnv(map[string]string{
		entitlement.EnvTokensPerDay:   "500",
		entitlement.EnvTokensPerMonth: "0",
		entitlement.EnvAllowedModels:  " codex-chatgpt , codex-agent ",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := entitlement.Effective{TokensPerDay: 500, RequestsPerMinute: 20, AllowedModels: []string{"codex-chatgpt", "codex-agent"}}
	if got := p.For("anyone"); !reflect.DeepEqual(got, want) {
		t.Fatalf("For = %+v, want %+v", got, want)
	}
	// The environment changes the defaults only.
	if got := p.For("bob"); got.TokensPerDay != 1000 {
		t.Fatalf("bob: %+v", got)
	}
	for _, env := range []map[string]string{
		{entitlement.EnvRequestsPerMinute: "-1"},
		{entitlement.EnvTokensPerDay: "lots"},
		{entitlement.EnvAllowedModels: ","},
		{entitlement.EnvAllowedModels: "codex-["},
	} {
		if err := (&entitlement.Policy{}).ApplyEnv(busconfig.MapEnv(env)); err == nil {
			t.Errorf("ApplyEnv(%v) succeeded", env)
		}
	}
}
