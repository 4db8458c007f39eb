package servicecmd

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
)

func token(t *testing.T, key []byte, subject string, iat time.Time, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Issue(key, auth.Claims{Subject: subject, Audience: []string{auth.Audience}, Scopes: []string{"llm:proxy", auth.ScopeService},
		IssuedAt: iat, ExpiresAt: iat.Add(ttl)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestFileTokenRotation(t *testing.T) {
	key := []byte("servicecmd-test-key")
	path := filepath.Join(t.TempDir(), "token")
	now := time.Now()
	first := token(t, key, "a", now, time.Hour)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(first + "\n")
	var logs bytes.Buffer
	f, err := newFileToken(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := f.checked
	f.now = func() time.Time { return clock }
	got := func() string {
		t.Helper()
		tok, err := f.Token()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if got() != first || !f.Expiry().Equal(now.Add(time.Hour).Truncate(time.Second)) {
		t.Fatalf("first token or its expiry (%s) not read", f.Expiry())
	}
	second := token(t, key, "b", now, 2*time.Hour)
	write(second)
	if got() != first {
		t.Fatal("the file was read again before the recheck interval")
	}
	clock = clock.Add(time.Second)
	if got() != second {
		t.Fatal("the rotated token was not picked up")
	}
	// A file being rewritten, emptied, or removed keeps the last good token.
	for _, bad := range []string{"", "eyJhbGciOi", "two tokens.x.y z.y.x"} {
		write(bad)
		clock = clock.Add(time.Second)
		if got() != second {
			t.Fatalf("after %q the last good token is not kept", bad)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Second)
	if got() != second {
		t.Fatal("the last good token is not kept when the file is gone")
	}
	third := token(t, key, "c", now, time.Hour)
	write(third)
	clock = clock.Add(time.Second)
	if got() != third {
		t.Fatal("the token written after a bad spell was not picked up")
	}
	for _, tok := range []string{first, second, third} {
		if strings.Contains(logs.String(), tok) || strings.Contains(logs.String(), strings.Split(tok, ".")[2]) {
			t.Fatalf("a token reached the log: %s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "service token reloaded") || !strings.Contains(logs.String(), "keeping the last good token") {
		t.Fatalf("reloads and problems are not logged: %s", logs.String())
	}
}

func TestTokenSourceChoice(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	key := []byte("servicecmd-test-key")
	tok := token(t, key, "svc", time.Now(), time.Hour)
	if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name string
		env  map[string]string
		from string // "" = usage error
		want string // in the usage error
	}{
		{"none", map[string]string{}, "", "BUS_API_TOKEN is not set"},
		{"both", map[string]string{TokenVar: tok, TokenFileVar: path}, "", "not both"},
		{"missing file", map[string]string{TokenFileVar: filepath.Join(dir, "nope")}, "", TokenFileVar},
		{"file", map[string]string{TokenFileVar: path}, TokenFileVar + " (" + path + ")", ""},
		{"variable", map[string]string{TokenVar: tok}, TokenVar, ""},
		{"variable with its secret", map[string]string{TokenVar: tok, "BUS_API_JWT_SECRET": string(key)}, TokenVar + " (renewed locally)", ""},
		{"variable with another secret", map[string]string{TokenVar: tok, "BUS_API_JWT_SECRET": "other"}, TokenVar, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.env["BUS_CONFIG_DIR"] = t.TempDir()
			src, from, err := newTokenSource(busconfig.MapEnv(c.env), "the worker", log)
			if c.from == "" {
				var usage *cliutil.UsageError
				if !errors.As(err, &usage) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), tok) {
					t.Fatalf("err = %v, want a usage error about %q", err, c.want)
				}
				return
			}
			if err != nil || from != c.from {
				t.Fatalf("from %q err %v, want %q", from, err, c.from)
			}
			if got, err := src.Token(); err != nil || got == "" {
				t.Fatalf("token %q %v", got, err)
			}
			if exp := src.Expiry(); exp.Before(time.Now().Add(50 * time.Minute)) {
				t.Fatalf("expiry %s", exp)
			}
		})
	}
}

// TestLocallyIssuedTokenIsRenewed: a token signed with the generated local
// secret (as `bus operator token issue --local` does) is renewed before it
// expires, with the same subject and scopes; the secret is never created
// by a service.
func TestLocallyIssuedTokenIsRenewed(t *testing.T) {
	env := busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": t.TempDir()})
	if src, _ := localRenewer(env, "a.b.c"); src != nil {
		t.Fatal("renewing without a secret")
	}
	if dir, _ := busconfig.AuthDir(env); fileExists(filepath.Join(dir, "local-hs256-secret")) {
		t.Fatal("a service created the local secret")
	}
	key, err := busconfig.LocalSecret(env)
	if err != nil {
		t.Fatal(err)
	}
	issued := token(t, key, "operator", time.Now().Add(-50*time.Minute), time.Hour) // 10 minutes left
	src, source := localRenewer(env, issued)
	if src == nil || !strings.HasSuffix(source, "local-hs256-secret") {
		t.Fatalf("not renewed (source %q)", source)
	}
	tok, err := src.Token()
	if err != nil || tok == issued {
		t.Fatalf("the token due for renewal was handed out (%v)", err)
	}
	c, err := auth.NewVerifier(key, auth.Audience).Verify(tok)
	if err != nil || c.Subject != "operator" || !c.HasScope(auth.ScopeService) || !c.HasScope("llm:proxy") {
		t.Fatalf("renewed token %+v %v", c, err)
	}
	if exp := src.Expiry(); exp.Before(time.Now().Add(55 * time.Minute)) {
		t.Fatalf("renewed expiry %s", exp)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestJWTExpiry(t *testing.T) {
	exp := time.Unix(1_900_000_000, 0)
	tok := token(t, []byte("k"), "s", exp.Add(-time.Hour), time.Hour)
	if got := jwtExpiry(tok); !got.Equal(exp) {
		t.Fatalf("expiry %s, want %s", got, exp)
	}
	for _, bad := range []string{"", "x.y.z", "a.b", "a." + "eyJzdWIiOiJ4In0" + ".c"} {
		if got := jwtExpiry(bad); !got.IsZero() {
			t.Fatalf("%q: expiry %s", bad, got)
		}
	}
}
