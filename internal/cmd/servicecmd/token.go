package servicecmd

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
)

// TokenFileVar names a file holding the service token. The file is read
// again when it changes (checked at most once a second), so a token can be
// rotated without a restart.
const TokenFileVar = "BUS_API_TOKEN_FILE"

// secretVars are where the Events API's signing secret may be set; a
// process that holds it (or the generated local secret) renews a token it
// signed before the token expires.
func secretVars() []string { return []string{"BUS_API_JWT_SECRET", "BUS_AUTH_HS256_SECRET"} }

// tokenSource hands out the service token.
type tokenSource interface {
	Token() (string, error)
	// Expiry is when the token Token returns now expires (zero: unknown).
	Expiry() time.Time
}

// newTokenSource picks where the token comes from: the token file, else
// BUS_API_TOKEN (renewed locally when this process holds the secret that
// signed it). from describes it for logs and errors; never the token.
func newTokenSource(env busconfig.Env, who string, log *slog.Logger) (src tokenSource, from string, err error) {
	token, path := env.Getenv(TokenVar), env.Getenv(TokenFileVar)
	switch {
	case token != "" && path != "":
		return nil, "", cliutil.Usagef("set %s or %s, not both", TokenVar, TokenFileVar)
	case path != "":
		f, err := newFileToken(path, log)
		if err != nil {
			return nil, "", cliutil.Usagef("%s: %v", TokenFileVar, err)
		}
		return f, TokenFileVar + " (" + path + ")", nil
	case token == "":
		return nil, "", cliutil.Usagef("%s is not set: %s needs a Bus API service token with scope llm:proxy for the Events API, e.g. %s (or a file holding it in %s)", TokenVar, who, TokenHint, TokenFileVar)
	}
	if r, source := localRenewer(env, token); r != nil {
		log.Info("the service token is renewed before it expires with the signing secret this process holds", "secret_from", source)
		return r, TokenVar + " (renewed locally)", nil
	}
	return staticToken{token: token, exp: jwtExpiry(token)}, TokenVar, nil
}

// staticToken is a fixed token.
type staticToken struct {
	token string
	exp   time.Time
}

func (s staticToken) Token() (string, error) { return s.token, nil }
func (s staticToken) Expiry() time.Time      { return s.exp }

// renewing renews a locally issued token.
type renewing struct {
	r *auth.Renewer

	mu  sync.Mutex
	tok string // the token exp was read from
	exp time.Time
}

func (r *renewing) Token() (string, error) { return r.r.Token() }
func (r *renewing) Expiry() time.Time {
	tok, err := r.r.Token()
	if err != nil {
		return time.Time{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if tok != r.tok {
		r.tok, r.exp = tok, jwtExpiry(tok)
	}
	return r.exp
}

// localRenewer returns a renewer for token when it verifies with a
// signing secret this process holds: a secret variable, or the generated
// local secret when it already exists. source names where the secret came
// from.
func localRenewer(env busconfig.Env, token string) (tokenSource, string) {
	try := func(key []byte, source string) (tokenSource, string) {
		c, err := auth.NewVerifier(key, auth.Audience).Verify(token)
		if err != nil || !c.ExpiresAt.After(c.IssuedAt) {
			return nil, ""
		}
		return &renewing{r: auth.NewRenewer(key, c.Subject, c.Scopes, c.ExpiresAt.Sub(c.IssuedAt))}, source
	}
	for _, v := range secretVars() {
		if val := env.Getenv(v); val != "" {
			if key, err := auth.ParseSecret(val); err == nil {
				if src, source := try(key, v); src != nil {
					return src, source
				}
			}
		}
	}
	dir, err := busconfig.AuthDir(env)
	if err != nil {
		return nil, ""
	}
	path := filepath.Join(dir, "local-hs256-secret")
	if _, err := os.Stat(path); err != nil {
		return nil, "" // never create a secret here
	}
	key, err := busconfig.LocalSecret(env)
	if err != nil {
		return nil, ""
	}
	return try(key, path)
}

// jwtExpiry reads the exp claim of a JWT without verifying it (zero when
// there is none). It is only used to notice expiry early.
func jwtExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil {
		return time.Time{}
	}
	sec, err := c.Exp.Float64()
	if err != nil || sec <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(sec), 0)
}

// fileToken is a token read from a file, read again at most once per
// recheck interval (the file is small; comparing metadata would miss a
// same-size rewrite within the file system's timestamp granularity). A
// file that cannot be read, is empty or does not hold a token keeps the
// last good token in use.
type fileToken struct {
	path    string
	log     *slog.Logger
	now     func() time.Time
	recheck time.Duration

	mu      sync.Mutex
	token   string
	exp     time.Time
	checked time.Time
	problem string // the last complaint logged, to log each once
}

func newFileToken(path string, log *slog.Logger) (*fileToken, error) {
	tok, err := readToken(path)
	if err != nil {
		return nil, err
	}
	f := &fileToken{path: path, log: log, now: time.Now, recheck: time.Second, token: tok, exp: jwtExpiry(tok)}
	f.checked = f.now()
	return f, nil
}

// readToken reads and checks a token file. Errors never include its
// content.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return "", errors.New("the token file is empty")
	case strings.ContainsAny(tok, " \t\r\n") || strings.Count(tok, ".") != 2:
		return "", errors.New("the token file does not hold one JWT")
	}
	return tok, nil
}

// Token returns the token, reloading the file when it changed.
func (f *fileToken) Token() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reload()
	return f.token, nil
}

// Expiry returns the expiry of the current token.
func (f *fileToken) Expiry() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reload()
	return f.exp
}

// reload reads the file when due. Caller holds f.mu.
func (f *fileToken) reload() {
	now := f.now()
	if now.Sub(f.checked) < f.recheck {
		return
	}
	f.checked = now
	tok, err := readToken(f.path)
	if err != nil {
		// Gone, or perhaps half written: try again at the next check.
		f.complain("the token file does not hold a usable token; keeping the last good token", err)
		return
	}
	f.problem = ""
	if tok == f.token {
		return
	}
	f.token, f.exp = tok, jwtExpiry(tok)
	f.log.Info("service token reloaded", "file", f.path, "expires", f.exp.UTC().Format(time.RFC3339))
}

// complain logs a problem with the file once until it is fixed.
func (f *fileToken) complain(msg string, err error) {
	if p := msg + ": " + err.Error(); p != f.problem {
		f.problem = p
		f.log.Warn(msg, "file", f.path, "err", err)
	}
}
