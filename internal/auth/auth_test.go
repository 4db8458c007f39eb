package auth_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

func TestParseSecret(t *testing.T) {
	tests := []struct {
		in   string
		want string
		bad  bool
	}{
		{in: "plain text", want: "plain text"},
		{in: "base64", want: "base64"},
		{in: " spaced ", want: " spaced "},
		{in: "base64:" + base64.StdEncoding.EncodeToString([]byte("\x00\x01bin")), want: "\x00\x01bin"},
		{in: "base64: " + base64.StdEncoding.EncodeToString([]byte("trim")) + "\n", want: "trim"},
		{in: "base64:not base64!", bad: true},
		{in: "base64:", bad: true},
		{in: "", bad: true},
	}
	for _, tc := range tests {
		got, err := auth.ParseSecret(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseSecret(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("ParseSecret(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestResolveSecret(t *testing.T) {
	dir := t.TempDir()
	env := busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": dir, "A": "", "B": "base64:" + base64.StdEncoding.EncodeToString([]byte("bee")), "C": "sea", "BAD": "base64:%"})
	key, src, err := auth.ResolveSecret(env, "A", "B", "C")
	if err != nil || string(key) != "bee" || src != "B" {
		t.Errorf("first set variable: %q %q %v", key, src, err)
	}
	if _, src, err := auth.ResolveSecret(env, "BAD", "C"); err == nil || src != "BAD" || !strings.Contains(err.Error(), "BAD") {
		t.Errorf("bad variable: %q %v", src, err)
	}
	key, src, err = auth.ResolveSecret(env, "A", "UNSET")
	local, _ := busconfig.LocalSecret(env)
	if err != nil || string(key) != string(local) || !strings.HasSuffix(src, "auth/local-hs256-secret") {
		t.Errorf("fallback: %q %q %v", key, src, err)
	}
	if strings.Contains(src, string(key)) {
		t.Error("source names the secret")
	}
}

var secret = []byte("test-secret")

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	now := time.Now()
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "aud": auth.Audience, "scope": "llm:proxy events:send", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	tests := []struct {
		name   string
		token  string
		scopes []string
		reason string // "" = valid
	}{
		{name: "valid", token: sign(t, jwt.SigningMethodHS256, secret, base()), scopes: []string{"llm:proxy", "events:send"}},
		{name: "audience list", token: sign(t, jwt.SigningMethodHS256, secret, with("aud", []string{"other", auth.Audience})), scopes: []string{"llm:proxy", "events:send"}},
		{name: "no scope claim", token: sign(t, jwt.SigningMethodHS256, secret, with("scope", nil))},
		{name: "empty scope", token: sign(t, jwt.SigningMethodHS256, secret, with("scope", "  "))},
		{name: "extra spaces in scope", token: sign(t, jwt.SigningMethodHS256, secret, with("scope", " a  b ")), scopes: []string{"a", "b"}},
		{name: "within leeway", token: sign(t, jwt.SigningMethodHS256, secret, with("exp", now.Add(-10*time.Second).Unix())), scopes: []string{"llm:proxy", "events:send"}},
		// Other algorithms are rejected; the reason reads "token signature is
		// invalid" (jwt reports a disallowed alg as ErrTokenSignatureInvalid).
		{name: "HS384", token: sign(t, jwt.SigningMethodHS384, secret, base()), reason: "invalid token"},
		{name: "HS512", token: sign(t, jwt.SigningMethodHS512, secret, base()), reason: "invalid token"},
		{name: "alg none", token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, base()), reason: "invalid token"},
		{name: "wrong secret", token: sign(t, jwt.SigningMethodHS256, []byte("other"), base()), reason: "signature is invalid"},
		{name: "wrong audience", token: sign(t, jwt.SigningMethodHS256, secret, with("aud", "ai.hg.fi/admin")), reason: "audience"},
		{name: "no audience", token: sign(t, jwt.SigningMethodHS256, secret, with("aud", nil)), reason: "required claim"},
		{name: "expired", token: sign(t, jwt.SigningMethodHS256, secret, with("exp", now.Add(-time.Hour).Unix())), reason: "expired"},
		{name: "no exp", token: sign(t, jwt.SigningMethodHS256, secret, with("exp", nil)), reason: "required claim"},
		{name: "no sub", token: sign(t, jwt.SigningMethodHS256, secret, with("sub", nil)), reason: "sub claim is required"},
		{name: "empty sub", token: sign(t, jwt.SigningMethodHS256, secret, with("sub", "")), reason: "sub claim is required"},
		{name: "no iat", token: sign(t, jwt.SigningMethodHS256, secret, with("iat", nil)), reason: "iat claim is required"},
		{name: "iat in the future", token: sign(t, jwt.SigningMethodHS256, secret, with("iat", now.Add(time.Hour).Unix())), reason: "not valid yet"},
		{name: "scope list", token: sign(t, jwt.SigningMethodHS256, secret, with("scope", []string{"llm:proxy"})), reason: "scope claim"},
		{name: "malformed", token: "not.a.jwt", reason: "malformed"},
	}
	v := auth.NewVerifier(secret, "")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token)
			if tc.reason != "" {
				if !errors.Is(err, auth.ErrInvalidToken) || !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("err = %v, want ErrInvalidToken about %q", err, tc.reason)
				}
				if err != nil && strings.Contains(err.Error(), tc.token) {
					t.Error("error echoes the token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Subject != "alice" || !slices.Equal(c.Scopes, tc.scopes) || c.IssuedAt.Unix() != now.Unix() || c.ExpiresAt.IsZero() {
				t.Errorf("claims %+v", c)
			}
		})
	}
	if _, err := v.Verify(""); !errors.Is(err, auth.ErrMissingToken) {
		t.Errorf("empty token: %v", err)
	}
	// Another audience can be verified when asked for.
	tok := sign(t, jwt.SigningMethodHS256, secret, with("aud", "ai.hg.fi/admin"))
	if _, err := auth.NewVerifier(secret, "ai.hg.fi/admin").Verify(tok); err != nil {
		t.Errorf("custom audience: %v", err)
	}
}

func TestIssue(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	v := auth.NewVerifier(secret, auth.Audience)
	tok, err := auth.Issue(secret, auth.Claims{Subject: "bob", Audience: []string{auth.Audience}, Scopes: []string{"llm:proxy", "events:admin"}, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "bob" || !c.HasScope("llm:proxy") || !c.HasScope(auth.ScopeEventsAdmin) || c.HasScope("llm") ||
		!c.IssuedAt.Equal(now) || !c.ExpiresAt.Equal(now.Add(time.Hour)) || !slices.Equal(c.Audience, []string{auth.Audience}) {
		t.Errorf("claims %+v", c)
	}
	// Zero IssuedAt means now.
	if _, err := auth.Issue(secret, auth.Claims{Subject: "x", Audience: []string{auth.Audience}, ExpiresAt: time.Now().Add(time.Minute)}); err != nil {
		t.Errorf("zero iat: %v", err)
	}
	for name, c := range map[string]auth.Claims{
		"no subject":          {ExpiresAt: now.Add(time.Hour)},
		"no expiry":           {Subject: "x", IssuedAt: now},
		"expiry before issue": {Subject: "x", IssuedAt: now, ExpiresAt: now.Add(-time.Second)},
	} {
		if _, err := auth.Issue(secret, c); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header string
		token  string
		err    error
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", nil},
		{"bearer abc", "abc", nil},
		{"BEARER   abc  ", "abc", nil},
		{"", "", auth.ErrMissingToken},
		{"Basic dXNlcjpwYXNz", "", auth.ErrInvalidToken},
		{"Bearer", "", auth.ErrInvalidToken},
		{"Bearer    ", "", auth.ErrInvalidToken},
		{"abc.def.ghi", "", auth.ErrInvalidToken},
	}
	for _, tc := range tests {
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		got, err := auth.BearerToken(r)
		if got != tc.token || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tc.header, got, err, tc.token, tc.err)
		}
	}
	r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	tok, _ := auth.Issue(secret, auth.Claims{Subject: "s", Audience: []string{auth.Audience}, ExpiresAt: time.Now().Add(time.Minute)})
	r.Header.Set("Authorization", "Bearer "+tok)
	if c, err := auth.NewVerifier(secret, "").Authenticate(r); err != nil || c.Subject != "s" {
		t.Errorf("Authenticate: %+v, %v", c, err)
	}
	r.Header.Del("Authorization")
	if _, err := auth.NewVerifier(secret, "").Authenticate(r); !errors.Is(err, auth.ErrMissingToken) {
		t.Errorf("Authenticate without header: %v", err)
	}
}

func TestServicePolicy(t *testing.T) {
	claims := func(sub string, scopes ...string) *auth.Claims { return &auth.Claims{Subject: sub, Scopes: scopes} }
	p := auth.ServicePolicy{Subjects: []string{"svc-a", "svc-b"}}
	tests := []struct {
		name   string
		policy auth.ServicePolicy
		claims *auth.Claims
		want   bool
	}{
		{"listed subject", p, claims("svc-a", auth.ScopeLLMProxy), true},
		{"service scope", p, claims("anyone", auth.ScopeLLMProxy, auth.ScopeService), true},
		{"caller", p, claims("alice", auth.ScopeLLMProxy), false},
		{"admin is no service", p, claims("ops", auth.ScopeEventsAdmin, auth.ScopeLLMProxy), false},
		{"zero policy, scope", auth.ServicePolicy{}, claims("x", auth.ScopeService), true},
		{"zero policy, no scope", auth.ServicePolicy{}, claims("svc-a", auth.ScopeLLMProxy), false},
		{"nil claims", p, nil, false},
	}
	for _, tc := range tests {
		if got := tc.policy.IsService(tc.claims); got != tc.want {
			t.Errorf("%s: IsService = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestServicePolicyFromEnv(t *testing.T) {
	dir := t.TempDir()
	id, err := busconfig.LocalIdentity(busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": dir}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"unset: the local identity", map[string]string{"BUS_CONFIG_DIR": dir}, []string{id}},
		{"empty: none", map[string]string{"BUS_CONFIG_DIR": dir, auth.EnvServiceSubjects: ""}, nil},
		{"list", map[string]string{"BUS_CONFIG_DIR": dir, auth.EnvServiceSubjects: " w1, fd ,,w1"}, []string{"w1", "fd"}},
	}
	for _, tc := range tests {
		p, err := auth.ServicePolicyFromEnv(busconfig.MapEnv(tc.env))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(p.Subjects, tc.want) {
			t.Errorf("%s: subjects %q, want %q", tc.name, p.Subjects, tc.want)
		}
	}
}
