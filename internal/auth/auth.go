// Package auth issues and verifies the Bus API's HS256 JWTs and decides which
// scopes a token carries.
//
// A Bus API token has the claims sub (identity), aud (ai.hg.fi/api), scope
// (space separated), iat and exp. Secrets are raw text unless they carry the
// "base64:" prefix, in which case the rest is standard base64.
//
// It imports internal/busconfig and the golang-jwt library.
package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

// Audience is the audience of normal Bus API tokens.
const Audience = "ai.hg.fi/api"

// Scopes used by this project.
const (
	ScopeLLMProxy     = "llm:proxy"
	ScopeEventsSend   = "events:send"
	ScopeEventsListen = "events:listen"
	// ScopeEventsAdmin lets a token listen to unprotected events of every
	// identity, not only its own.
	ScopeEventsAdmin = "events:admin"
	// ScopeService marks a service principal (a worker or a front door):
	// only services may publish, listen to, join groups of and acknowledge
	// bus.llm.* events. Callers' tokens never carry it.
	ScopeService = "bus:service"
	// ScopeLLMAdmin lets a token read every identity's usage at the REST
	// front door (GET /v1/usage), not only its own.
	ScopeLLMAdmin = "llm:admin"
)

// Errors returned by Verify, to check with errors.Is.
var (
	ErrMissingToken = errors.New("missing bearer token")
	ErrInvalidToken = errors.New("invalid token")
)

// Claims are the verified claims of a token.
type Claims struct {
	Subject   string
	Audience  []string
	Scopes    []string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// HasScope reports whether the token carries scope.
func (c *Claims) HasScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// ParseSecret turns a configured secret value into key bytes: raw text, or
// base64 after a "base64:" prefix.
func ParseSecret(value string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(value, "base64:"); ok {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf("auth: secret has a base64: prefix but is not valid base64: %w", err)
		}
		if len(b) == 0 {
			return nil, errors.New("auth: base64 secret is empty")
		}
		return b, nil
	}
	if value == "" {
		return nil, errors.New("auth: secret is empty")
	}
	return []byte(value), nil
}

// ResolveSecret returns the HS256 key from the first set variable among
// vars; when none is set it falls back to the generated local secret under
// the Bus configuration root (created on first use), so the local issuer and
// local servers agree without set-up. source says where it came from (a
// variable name or the file), never the secret itself.
func ResolveSecret(env busconfig.Env, vars ...string) (key []byte, source string, err error) {
	for _, v := range vars {
		if val, ok := env(v); ok && val != "" {
			key, err := ParseSecret(val)
			if err != nil {
				return nil, v, fmt.Errorf("%s: %w", v, err)
			}
			return key, v, nil
		}
	}
	key, err = busconfig.LocalSecret(env)
	if err != nil {
		return nil, "", err
	}
	dir, _ := busconfig.AuthDir(env)
	return key, dir + "/local-hs256-secret", nil
}

// Issue signs claims with key. Zero IssuedAt means now.
func Issue(key []byte, c Claims) (string, error) {
	if c.Subject == "" {
		return "", errors.New("auth: subject is required")
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.ExpiresAt.IsZero() || !c.ExpiresAt.After(c.IssuedAt) {
		return "", errors.New("auth: expiry must be after issue time")
	}
	mc := jwt.MapClaims{
		"sub":   c.Subject,
		"scope": strings.Join(c.Scopes, " "),
		"iat":   c.IssuedAt.Unix(),
		"exp":   c.ExpiresAt.Unix(),
	}
	switch len(c.Audience) {
	case 0:
	case 1:
		mc["aud"] = c.Audience[0]
	default:
		mc["aud"] = c.Audience
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, mc).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return s, nil
}

// Verifier checks HS256 tokens for one audience. Verified tokens are
// remembered until they expire, so a service that calls with the same token
// thousands of times a second pays the signature check once.
type Verifier struct {
	key      []byte
	audience string
	now      func() time.Time

	mu    sync.Mutex
	cache map[string]*Claims
}

// maxCachedTokens bounds the verified-token cache; when full it is emptied.
const maxCachedTokens = 4096

// NewVerifier returns a Verifier for key and audience (Audience when empty).
func NewVerifier(key []byte, audience string) *Verifier {
	if audience == "" {
		audience = Audience
	}
	return &Verifier{key: key, audience: audience, now: time.Now}
}

// Verify checks the signature, algorithm, audience and expiry of token and
// requires sub, iat and exp. Every failure wraps ErrInvalidToken. The
// returned claims are shared: do not modify them.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissingToken
	}
	v.mu.Lock()
	c, ok := v.cache[token]
	v.mu.Unlock()
	// The parser allows 30s of leeway on expiry; the cache does not.
	if ok && v.now().Before(c.ExpiresAt) {
		return c, nil
	}
	c, err := v.verify(token)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if v.cache == nil || len(v.cache) >= maxCachedTokens {
		v.cache = map[string]*Claims{}
	}
	v.cache[token] = c
	v.mu.Unlock()
	return c, nil
}

func (v *Verifier) verify(token string) (*Claims, error) {
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.now),
		jwt.WithLeeway(30*time.Second),
	)
	var mc jwt.MapClaims
	if _, err := parser.ParseWithClaims(token, &mc, func(*jwt.Token) (any, error) { return v.key, nil }); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidToken, describe(err))
	}
	c := &Claims{}
	var err error
	if c.Subject, err = mc.GetSubject(); err != nil || c.Subject == "" {
		return nil, fmt.Errorf("%w: sub claim is required", ErrInvalidToken)
	}
	if c.Audience, err = mc.GetAudience(); err != nil {
		return nil, fmt.Errorf("%w: bad aud claim", ErrInvalidToken)
	}
	iat, err := mc.GetIssuedAt()
	if err != nil || iat == nil {
		return nil, fmt.Errorf("%w: iat claim is required", ErrInvalidToken)
	}
	c.IssuedAt = iat.Time
	exp, _ := mc.GetExpirationTime() // required and checked by the parser
	c.ExpiresAt = exp.Time
	switch s := mc["scope"].(type) {
	case string:
		c.Scopes = strings.Fields(s)
	case nil:
	default:
		return nil, fmt.Errorf("%w: scope claim must be a space-separated string", ErrInvalidToken)
	}
	return c, nil
}

// describe turns a jwt error into a short reason that never echoes the token.
func describe(err error) string {
	switch {
	case strings.Contains(err.Error(), "signing method"):
		// jwt reports a disallowed algorithm as an invalid signature.
		return "token signing method is not accepted"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token is expired"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "token audience is not accepted"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "token signature is invalid"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token is malformed"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued), errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token is not valid yet"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "token signing method is not accepted"
	default:
		return "token could not be verified"
	}
}

// BearerToken extracts the token from an "Authorization: Bearer" header.
func BearerToken(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", ErrMissingToken
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", fmt.Errorf("%w: authorization header is not a bearer token", ErrInvalidToken)
	}
	return strings.TrimSpace(tok), nil
}

// Authenticate verifies the bearer token of r.
func (v *Verifier) Authenticate(r *http.Request) (*Claims, error) {
	tok, err := BearerToken(r)
	if err != nil {
		return nil, err
	}
	return v.Verify(tok)
}

// Renewer hands out a token for one subject and scopes, issued with the
// signing key it holds, and issues a new one once less than a third of its
// lifetime is left: a service that holds the secret never runs on an
// expired token. Its Token method is safe for concurrent use.
type Renewer struct {
	key      []byte
	subject  string
	scopes   []string
	ttl      time.Duration
	now      func() time.Time
	mu       sync.Mutex
	token    string
	issuedAt time.Time
}

// NewRenewer returns a Renewer issuing tokens of ttl for subject with scopes
// (audience Audience).
func NewRenewer(key []byte, subject string, scopes []string, ttl time.Duration) *Renewer {
	return &Renewer{key: key, subject: subject, scopes: slices.Clone(scopes), ttl: ttl, now: time.Now}
}

// Token returns the current token, renewing it when it is due.
func (r *Renewer) Token() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.token != "" && now.Before(r.issuedAt.Add(r.ttl*2/3)) {
		return r.token, nil
	}
	tok, err := Issue(r.key, Claims{Subject: r.subject, Audience: []string{Audience}, Scopes: r.scopes, IssuedAt: now, ExpiresAt: now.Add(r.ttl)})
	if err != nil {
		return "", err
	}
	r.token, r.issuedAt = tok, now
	return tok, nil
}
