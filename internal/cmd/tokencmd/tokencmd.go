// Package tokencmd implements bus-operator-token, the local HS256 issuer of
// Bus API tokens.
//
// It signs tokens with the secret from BUS_AUTH_HS256_SECRET (raw text, or
// standard base64 after a "base64:" prefix) or, when that is unset, with the
// generated local secret under the Bus configuration root, so tokens it
// issues are accepted by local servers configured the same way. Only local
// issuing exists in this project; "issue" therefore requires --local.
//
// It imports internal/auth and internal/busconfig; only cmd/bus-operator-token imports it.
package tokencmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

// Name is the command name used in messages.
const Name = "bus-operator-token"

// SecretVar is the environment variable holding the HS256 signing secret.
const SecretVar = "BUS_AUTH_HS256_SECRET"

// Defaults of the issue subcommand.
const (
	DefaultScope  = auth.ScopeLLMProxy
	DefaultTTL    = 12 * time.Hour
	DefaultFormat = formatJSON
)

// Exit codes returned by Run.
const (
	ExitOK    = 0
	ExitError = 1 // the command was well formed but failed
	ExitUsage = 2 // bad usage
)

const (
	formatJSON  = "json"
	formatToken = "token"
)

// Usage is the help text printed by -h.
const Usage = `Usage:
  bus-operator-token [--format token|json] issue --local [options]

Issues a local HS256 Bus API token. The signing secret is taken from
BUS_AUTH_HS256_SECRET (raw text, or base64 after a "base64:" prefix); when
it is unset, the generated secret auth/local-hs256-secret under the Bus
config root (BUS_CONFIG_DIR, else $XDG_CONFIG_HOME/bus, else ~/.config/bus)
is used and created on first use. The secret is never printed.

Options of issue (--format may also be given before "issue"):
  --local            issue locally with the HS256 secret (required; only
                     local issuing is supported)
  --subject ID       token subject (default: the local identity stored in
                     auth/local-identity under the Bus config root)
  --audience AUD     token audience (default: ai.hg.fi/api)
  --scope "S1 S2"    space-separated scopes (default: llm:proxy)
  --ttl DURATION     lifetime as a Go duration, e.g. 30m, 12h (default: 12h)
  --format FORMAT    token: print only the token; json: print the token and
                     its claims as JSON (default: json)
  --out FILE         also write the token to FILE with mode 0600, e.g.
                     "${BUS_CONFIG_DIR}/auth/api-token"

Exit status: 0 on success, 1 on failure, 2 on bad usage.
`

// Output is the JSON printed by --format json.
type Output struct {
	Token     string `json:"token"`
	TokenType string `json:"token_type"`
	Subject   string `json:"subject"`
	Audience  string `json:"audience"`
	Scope     string `json:"scope"`
	IssuedAt  string `json:"issued_at"`
	ExpiresAt string `json:"expires_at"`
}

// usageError is a bad-usage error (exit status 2) with a one-line message.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usageErrorf returns a usageError.
func usageErrorf(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// issueRequest is a parsed issue command line.
type issueRequest struct {
	local    bool
	subject  string
	audience string
	scopes   []string
	ttl      time.Duration
	format   string
	out      string
}

// Run executes bus-operator-token with args (without the program name),
// reading variables from env, and returns the exit status. Output goes to
// stdout; one-line diagnostics go to stderr.
func Run(ctx context.Context, args []string, env busconfig.Env, stdout, stderr io.Writer) int {
	req, help, err := parse(args)
	if help {
		fmt.Fprint(stdout, Usage)
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (see %s --help)\n", Name, err, Name)
		return ExitUsage
	}
	if err := ctx.Err(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", Name, err)
		return ExitError
	}
	if err := issue(req, env, time.Now(), stdout); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", Name, err)
		return ExitError
	}
	return ExitOK
}

// parse parses the command line. help is true when usage was requested.
func parse(args []string) (req issueRequest, help bool, err error) {
	format := DefaultFormat
	top := newFlagSet("")
	top.StringVar(&format, "format", format, "")
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return req, true, nil
		}
		return req, false, usageErrorf("%s", flagError(err))
	}
	rest := top.Args()
	if len(rest) == 0 {
		return req, false, usageErrorf("missing subcommand (expected \"issue\")")
	}
	switch rest[0] {
	case "help":
		return req, true, nil
	case "issue":
	default:
		return req, false, usageErrorf("unknown subcommand %q (expected \"issue\")", rest[0])
	}

	req = issueRequest{audience: auth.Audience, ttl: DefaultTTL}
	scope := DefaultScope
	fs := newFlagSet("issue")
	fs.BoolVar(&req.local, "local", false, "")
	fs.StringVar(&req.subject, "subject", "", "")
	fs.StringVar(&req.audience, "audience", req.audience, "")
	fs.StringVar(&scope, "scope", scope, "")
	fs.DurationVar(&req.ttl, "ttl", req.ttl, "")
	fs.StringVar(&format, "format", format, "")
	fs.StringVar(&req.out, "out", "", "")
	if err := fs.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return req, true, nil
		}
		return req, false, usageErrorf("issue: %s", flagError(err))
	}
	if fs.NArg() > 0 {
		return req, false, usageErrorf("issue: unexpected argument %q", fs.Arg(0))
	}
	if !req.local {
		return req, false, usageErrorf("issue: --local is required; only local issuing is supported")
	}
	if format != formatJSON && format != formatToken {
		return req, false, usageErrorf("unknown --format %q (expected token or json)", format)
	}
	req.format = format
	if req.ttl <= 0 {
		return req, false, usageErrorf("issue: --ttl must be positive, got %s", req.ttl)
	}
	req.audience = strings.TrimSpace(req.audience)
	if req.audience == "" {
		return req, false, usageErrorf("issue: --audience must not be empty")
	}
	req.scopes = strings.Fields(scope)
	if len(req.scopes) == 0 {
		return req, false, usageErrorf("issue: --scope must name at least one scope")
	}
	req.subject = strings.TrimSpace(req.subject)
	if isSet(fs, "subject") && req.subject == "" {
		return req, false, usageErrorf("issue: --subject must not be empty")
	}
	if isSet(fs, "out") && req.out == "" {
		return req, false, usageErrorf("issue: --out must not be empty")
	}
	return req, false, nil
}

// newFlagSet returns a silent flag set; Run reports its errors itself.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// flagError shortens the flag package's error messages to one line.
func flagError(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

// issue signs a token for req at now and writes it to stdout (and req.out).
func issue(req issueRequest, env busconfig.Env, now time.Time, stdout io.Writer) error {
	key, _, err := auth.ResolveSecret(env, SecretVar)
	if err != nil {
		return fmt.Errorf("signing secret: %w", err)
	}
	subject := req.subject
	if subject == "" {
		if subject, err = busconfig.LocalIdentity(env); err != nil {
			return fmt.Errorf("local identity: %w", err)
		}
	}
	// JWT times have whole-second precision; report what the token says.
	iat := now.Truncate(time.Second)
	exp := iat.Add(req.ttl)
	tok, err := auth.Issue(key, auth.Claims{
		Subject:   subject,
		Audience:  []string{req.audience},
		Scopes:    req.scopes,
		IssuedAt:  iat,
		ExpiresAt: exp,
	})
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	if req.out != "" {
		if err := busconfig.WriteSecretFile(req.out, []byte(tok+"\n")); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	switch req.format {
	case formatToken:
		_, err = fmt.Fprintln(stdout, tok)
	default:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(Output{
			Token:     tok,
			TokenType: "Bearer",
			Subject:   subject,
			Audience:  req.audience,
			Scope:     strings.Join(req.scopes, " "),
			IssuedAt:  iat.UTC().Format(time.RFC3339),
			ExpiresAt: exp.UTC().Format(time.RFC3339),
		})
	}
	if err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
