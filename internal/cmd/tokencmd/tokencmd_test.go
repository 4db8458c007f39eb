package tokencmd_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cmd/tokencmd"
)

const testSecret = "test-secret-for-tokencli"

// run runs the CLI and returns its exit status, stdout and stderr.
func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := tokencmd.Run(context.Background(), args, busconfig.MapEnv(env), &out, &errOut)
	return code, out.String(), errOut.String()
}

// envWith returns an environment with a temp config root and, unless
// secret is empty, BUS_AUTH_HS256_SECRET.
func envWith(t *testing.T, secret string) map[string]string {
	t.Helper()
	env := map[string]string{"BUS_CONFIG_DIR": t.TempDir()}
	if secret != "" {
		env[tokencmd.SecretVar] = secret
	}
	return env
}

// tokenLine checks that out is exactly one token line and returns it.
func tokenLine(t *testing.T, out string) string {
	t.Helper()
	tok, ok := strings.CutSuffix(out, "\n")
	if !ok || tok == "" || strings.ContainsAny(tok, " \n{") || strings.Count(tok, ".") != 2 {
		t.Fatalf("output is not a single token line: %q", out)
	}
	return tok
}

func verify(t *testing.T, key []byte, audience, tok string) *auth.Claims {
	t.Helper()
	c, err := auth.NewVerifier(key, audience).Verify(tok)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	return c
}

func TestIssueTokenCarriesRequestedClaims(t *testing.T) {
	env := envWith(t, testSecret)
	before := time.Now().Truncate(time.Second)
	code, out, errOut := run(t, env, "--format", "token", "issue", "--local",
		"--subject", "3f1c1d2e-0000-4000-8000-000000000001", "--audience", "example.test/api",
		"--scope", "llm:proxy  events:send", "--ttl", "90m")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if errOut != "" {
		t.Errorf("unexpected stderr %q", errOut)
	}
	c := verify(t, []byte(testSecret), "example.test/api", tokenLine(t, out))
	if c.Subject != "3f1c1d2e-0000-4000-8000-000000000001" {
		t.Errorf("sub = %q", c.Subject)
	}
	if !slices.Equal(c.Audience, []string{"example.test/api"}) {
		t.Errorf("aud = %q", c.Audience)
	}
	if !slices.Equal(c.Scopes, []string{"llm:proxy", "events:send"}) {
		t.Errorf("scopes = %q", c.Scopes)
	}
	if got := c.ExpiresAt.Sub(c.IssuedAt); got != 90*time.Minute {
		t.Errorf("exp - iat = %s, want 90m", got)
	}
	if c.IssuedAt.Before(before) || c.IssuedAt.After(time.Now()) {
		t.Errorf("iat %s is not now", c.IssuedAt)
	}
	// A different audience or key must not accept it.
	if _, err := auth.NewVerifier([]byte(testSecret), auth.Audience).Verify(tokenLine(t, out)); err == nil {
		t.Error("token verified for the wrong audience")
	}
	if _, err := auth.NewVerifier([]byte("other"), "example.test/api").Verify(tokenLine(t, out)); err == nil {
		t.Error("token verified with the wrong key")
	}
}

func TestIssueDefaults(t *testing.T) {
	env := envWith(t, testSecret)
	code, out, errOut := run(t, env, "issue", "--local")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var o tokencmd.Output
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("default output is not JSON: %v: %q", err, out)
	}
	id, err := busconfig.LocalIdentity(busconfig.MapEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	c := verify(t, []byte(testSecret), auth.Audience, o.Token)
	if c.Subject != id || o.Subject != id {
		t.Errorf("subject = %q / %q, want local identity %q", c.Subject, o.Subject, id)
	}
	if !slices.Equal(c.Scopes, []string{auth.ScopeLLMProxy}) || o.Scope != auth.ScopeLLMProxy {
		t.Errorf("scope = %q / %q, want llm:proxy", c.Scopes, o.Scope)
	}
	if got := c.ExpiresAt.Sub(c.IssuedAt); got != 12*time.Hour {
		t.Errorf("default ttl = %s, want 12h", got)
	}
	if o.TokenType != "Bearer" || o.Audience != auth.Audience {
		t.Errorf("token_type %q audience %q", o.TokenType, o.Audience)
	}
	iat, err1 := time.Parse(time.RFC3339, o.IssuedAt)
	exp, err2 := time.Parse(time.RFC3339, o.ExpiresAt)
	if err1 != nil || err2 != nil {
		t.Fatalf("times are not RFC 3339: %q %q", o.IssuedAt, o.ExpiresAt)
	}
	if !iat.Equal(c.IssuedAt) || !exp.Equal(c.ExpiresAt) {
		t.Errorf("JSON times %s..%s differ from claims %s..%s", iat, exp, c.IssuedAt, c.ExpiresAt)
	}
	if strings.Contains(out, testSecret) {
		t.Error("output contains the secret")
	}
}

func TestJSONFieldNames(t *testing.T) {
	code, out, errOut := run(t, envWith(t, testSecret), "issue", "--local", "--subject", "s", "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"audience", "expires_at", "issued_at", "scope", "subject", "token", "token_type"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys = %q, want %q", keys, want)
	}
}

func TestFormatBeforeAndAfterSubcommand(t *testing.T) {
	for _, args := range [][]string{
		{"--format", "token", "issue", "--local", "--scope", "llm:proxy"},
		{"issue", "--local", "--scope", "llm:proxy", "--format", "token"},
		{"--format=json", "issue", "--local", "--format=token"}, // the later one wins
	} {
		env := envWith(t, testSecret)
		code, out, errOut := run(t, env, args...)
		if code != 0 {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errOut)
		}
		verify(t, []byte(testSecret), "", tokenLine(t, out))
	}
	code, out, _ := run(t, envWith(t, testSecret), "--format", "token", "issue", "--local", "--format", "json")
	if code != 0 || !json.Valid([]byte(out)) {
		t.Errorf("--format json after issue did not override: exit %d, %q", code, out)
	}
}

func TestBase64Secret(t *testing.T) {
	key := []byte{0, 1, 2, 0xff, 'k', 'e', 'y', 0x80}
	env := envWith(t, "base64:"+base64.StdEncoding.EncodeToString(key))
	code, out, errOut := run(t, env, "issue", "--local", "--format", "token")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	tok := tokenLine(t, out)
	verify(t, key, "", tok)
	if _, err := auth.NewVerifier([]byte(env[tokencmd.SecretVar]), "").Verify(tok); err == nil {
		t.Error("token signed with the raw text instead of the decoded key")
	}

	code, out, errOut = run(t, envWith(t, "base64:%%%not-base64"), "issue", "--local")
	if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tokencmd.SecretVar) {
		t.Errorf("bad base64 secret: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if strings.Contains(errOut, "not-base64") {
		t.Errorf("error echoes the secret: %q", errOut)
	}
}

func TestGeneratedLocalSecret(t *testing.T) {
	env := envWith(t, "")
	code, out1, errOut := run(t, env, "issue", "--local", "--format", "token")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	path := filepath.Join(env["BUS_CONFIG_DIR"], "auth", "local-hs256-secret")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("generated secret file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("secret file mode = %o, want 600", perm)
	}
	secret, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte(strings.TrimSpace(string(secret)))
	if strings.Contains(out1, string(key)) || strings.Contains(errOut, string(key)) {
		t.Error("output contains the generated secret")
	}
	code, out2, errOut := run(t, env, "issue", "--local", "--format", "token")
	if code != 0 {
		t.Fatalf("second issue: exit %d, stderr %q", code, errOut)
	}
	verify(t, key, "", tokenLine(t, out1))
	verify(t, key, "", tokenLine(t, out2))
	if after, _ := os.ReadFile(path); !bytes.Equal(after, secret) {
		t.Error("second issue replaced the generated secret")
	}
}

func TestOutFile(t *testing.T) {
	env := envWith(t, testSecret)
	path := filepath.Join(env["BUS_CONFIG_DIR"], "auth", "api-token")
	code, out, errOut := run(t, env, "--format", "token", "issue", "--local", "--out", path)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("--out mode = %o, want 600", perm)
	}
	b, _ := os.ReadFile(path)
	if string(b) != out {
		t.Errorf("file %q differs from stdout %q", b, out)
	}
	verify(t, []byte(testSecret), "", tokenLine(t, string(b)))

	// An existing file is replaced and keeps mode 0600.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run(t, env, "issue", "--local", "--out", path); code != 0 {
		t.Fatalf("rewrite: exit %d, stderr %q", code, errOut)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten --out mode = %o, want 600", fi.Mode().Perm())
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "missing subcommand"},
		{[]string{"mint"}, `unknown subcommand "mint"`},
		{[]string{"--bogus", "issue", "--local"}, "-bogus"},
		{[]string{"issue", "--local", "--bogus"}, "-bogus"},
		{[]string{"issue"}, "only local issuing is supported"},
		{[]string{"issue", "--subject", "x"}, "only local issuing is supported"},
		{[]string{"issue", "--local", "--ttl", "soon"}, "-ttl"},
		{[]string{"issue", "--local", "--ttl", "-1h"}, "--ttl must be positive"},
		{[]string{"issue", "--local", "--ttl", "0s"}, "--ttl must be positive"},
		{[]string{"--format", "yaml", "issue", "--local"}, `unknown --format "yaml"`},
		{[]string{"issue", "--local", "--format", "xml"}, `unknown --format "xml"`},
		{[]string{"issue", "--local", "--scope", " "}, "--scope"},
		{[]string{"issue", "--local", "--audience", ""}, "--audience"},
		{[]string{"issue", "--local", "--subject", ""}, "--subject"},
		{[]string{"issue", "--local", "extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		code, out, errOut := run(t, envWith(t, testSecret), tc.args...)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2", tc.args, code)
		}
		if out != "" {
			t.Errorf("%q: stdout %q, want none", tc.args, out)
		}
		if !strings.HasPrefix(errOut, "bus-operator-token: ") || strings.Count(errOut, "\n") != 1 || !strings.HasSuffix(errOut, "\n") {
			t.Errorf("%q: stderr is not one line: %q", tc.args, errOut)
		}
		if !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: stderr %q does not mention %q", tc.args, errOut, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"issue", "-h"}, {"--format", "token", "issue", "--help"}} {
		code, out, errOut := run(t, envWith(t, testSecret), args...)
		if code != 0 || errOut != "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
		if out != tokencmd.Usage {
			t.Errorf("%q: stdout is not the usage text: %q", args, out)
		}
	}
}

func TestCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	code := tokencmd.Run(ctx, []string{"issue", "--local"}, busconfig.MapEnv(envWith(t, testSecret)), &out, &errOut)
	if code != 1 || out.Len() != 0 {
		t.Errorf("exit %d, stdout %q", code, out.String())
	}
}
