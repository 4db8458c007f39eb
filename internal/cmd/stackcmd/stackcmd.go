// Package stackcmd is the bus-local-stack command (make run): the Events API on
// the memory backend, a worker and the OpenAI-compatible front door, in one
// process on loopback, with a local llm:proxy token written for the user.
// Ctrl-C stops everything, draining requests in flight.
//
// It may import any non-command package and internal/cmd/workercmd; only cmd/bus-local-stack imports it.
package stackcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/workercmd"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Name is the command name.
const Name = "bus-local-stack"

// SecretVars are read, in order, for the one secret the stack's services
// share; without them the generated local secret is used (the same one
// `bus operator token issue --local` uses).
func SecretVars() []string {
	return []string{"BUS_AUTH_HS256_SECRET", "BUS_API_JWT_SECRET", "BUS_LLM_JWT_SECRET"}
}

type options struct {
	addr, eventsAddr string
	worker           workercmd.Options
	catalogPath      string
	tokenTTL         time.Duration
}

func parse(args []string, io cliutil.IO) (*options, error) {
	env := io.Env
	o := &options{}
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", cliutil.String(env, "BUS_LLM_ADDR", "127.0.0.1:8080"), "front door listen address (env BUS_LLM_ADDR)")
	fs.StringVar(&o.eventsAddr, "events-addr", cliutil.String(env, "BUS_EVENTS_API_ADDR", "127.0.0.1:8081"), "Events API listen address (env BUS_EVENTS_API_ADDR)")
	fs.StringVar(&o.worker.Provider, "provider", cliutil.String(env, "BUS_CODEX_PROVIDER", "codex"), "execution provider: codex or static (env BUS_CODEX_PROVIDER)")
	fs.StringVar(&o.worker.Workdir, "workdir", cliutil.String(env, "BUS_CODEX_WORKDIR", ""), "Codex working directory (env BUS_CODEX_WORKDIR; default: current directory)")
	fs.StringVar(&o.worker.Model, "model", cliutil.String(env, "BUS_CODEX_MODEL", "auto"), "Codex model; auto lets Codex choose (env BUS_CODEX_MODEL)")
	fs.StringVar(&o.worker.CodexCommand, "codex-command", cliutil.String(env, "BUS_CODEX_COMMAND", "codex"), "Codex executable (env BUS_CODEX_COMMAND)")
	fs.StringVar(&o.worker.Sandbox, "sandbox", cliutil.String(env, "BUS_CODEX_SANDBOX", "read-only"), "Codex sandbox (env BUS_CODEX_SANDBOX)")
	fs.DurationVar(&o.worker.Timeout, "timeout", 60*time.Second, "request timeout")
	fs.IntVar(&o.worker.Concurrency, "concurrency", 0, fmt.Sprintf("requests run at once (default: %d per App Server process)", workercmd.ConcurrencyPerProcess))
	fs.StringVar(&o.catalogPath, "model-catalog", cliutil.String(env, "BUS_LLM_MODEL_CATALOG", ""), "model catalog file (env BUS_LLM_MODEL_CATALOG; default: codex-chatgpt)")
	fs.DurationVar(&o.tokenTTL, "token-ttl", 12*time.Hour, "lifetime of the token written to auth/api-token")
	logLevel := fs.String("log-level", cliutil.String(env, "BUS_LOG_LEVEL", "warn"), "log level: debug, info, warn, error (env BUS_LOG_LEVEL)")
	if err := cliutil.ParseFlags(fs, args, io.Stdout); err != nil {
		return nil, err
	}
	if o.worker.Provider != "codex" && o.worker.Provider != "static" {
		return nil, cliutil.Usagef("--provider must be codex or static, not %q", o.worker.Provider)
	}
	o.worker.LogLevel = *logLevel
	o.worker.Approvals = "deny"
	o.worker.Processes = workercmd.DefaultProcesses()
	if o.worker.Concurrency <= 0 {
		o.worker.Concurrency = workercmd.ConcurrencyPerProcess * o.worker.Processes
	}
	o.worker.Instructions = codex.InstructionsAuto
	o.worker.LiveThreads, o.worker.LiveThreadTTL = codex.DefaultLiveThreads, codex.DefaultLiveThreadTTL
	o.worker.MaxRSSMiB = appserver.DefaultMaxRSS >> 20
	o.worker.Group = workercmd.DefaultGroup
	o.worker.Consumer = "local-stack"
	o.worker.ResponseStore = "memory"
	o.worker.ResponseTTL = respstore.DefaultTTL
	return o, nil
}

// Run runs the command.
func Run(ctx context.Context, args []string, io cliutil.IO) int {
	return cliutil.Run(ctx, args, io, Name, parse, run)
}

func run(ctx context.Context, o *options, io cliutil.IO) error {
	log, err := cliutil.Logger(io.Stderr, o.worker.LogLevel)
	if err != nil {
		return err
	}
	cat, err := catalog.LoadOrDefault(o.catalogPath)
	if err != nil {
		return err
	}
	key, _, err := auth.ResolveSecret(io.Env, SecretVars()...)
	if err != nil {
		return fmt.Errorf("jwt secret: %w", err)
	}
	identity, err := busconfig.LocalIdentity(io.Env)
	if err != nil {
		return err
	}
	tokenFile, err := busconfig.TokenFile(io.Env)
	if err != nil {
		return err
	}

	// The provider first: a missing or logged-out codex is the most
	// likely problem and is reported before anything listens.
	o.worker.ModelCatalog = o.catalogPath
	x, closeExecutor, err := workercmd.NewExecutor(ctx, &o.worker, log, io.Env)
	if err != nil {
		return err
	}
	// Usage in memory, for bus llm usage (bus-llm-usage) against the stack.
	usageWriter := usage.NewWriter(usage.NewMemory(usage.MemoryOptions{}), usage.WriterOptions{Logger: log})
	defer usageWriter.Close(context.WithoutCancel(ctx))
	st, err := stack.Start(ctx, stack.Config{
		EventsAddr: o.eventsAddr, FrontAddr: o.addr, Secret: key, Catalog: cat,
		Timeout: o.worker.Timeout, ShutdownTimeout: 30 * time.Second, Logger: log, Usage: usageWriter,
		Worker: &stack.WorkerConfig{
			Executor: x, Release: func() error { closeExecutor(); return nil },
			Group: o.worker.Group, Consumer: o.worker.Consumer, Concurrency: o.worker.Concurrency,
		},
	})
	if err != nil {
		return err
	}
	now := time.Now()
	userToken, err := auth.Issue(key, auth.Claims{Subject: identity, Audience: []string{auth.Audience},
		Scopes: []string{llmapi.Scope}, IssuedAt: now, ExpiresAt: now.Add(o.tokenTTL)})
	if err == nil {
		err = busconfig.WriteSecretFile(tokenFile, []byte(userToken+"\n"))
	}
	if err != nil {
		return errors.Join(err, st.Close())
	}
	printBanner(io.Stdout, st.BaseURL, tokenFile, o.worker.Provider)

	// The first part to fail stops the others; Ctrl-C stops all. Close
	// stops the front door first (draining its requests), then the
	// worker, then the Events API.
	var cause error
	select {
	case <-ctx.Done():
	case cause = <-st.Failed():
	}
	fmt.Fprintln(io.Stdout, "stopping...")
	return errors.Join(cause, st.Close())
}

func printBanner(w io.Writer, base, tokenFile, provider string) {
	fmt.Fprintf(w, `bus-local-stack is running (provider %s).

  OpenAI base URL:  %s/v1
  API token:        %s  (scope llm:proxy; any OpenAI SDK takes it as the API key)

  curl -fsS -H "Authorization: Bearer $(cat %s)" -H "Content-Type: application/json" \
    %s/v1/chat/completions -d '{"model":"codex-chatgpt","messages":[{"role":"user","content":"Reply OK"}]}'

Press Ctrl-C to stop.
`, provider, base, tokenFile, shellQuote(tokenFile), base)
}

func shellQuote(s string) string {
	if filepath.IsAbs(s) && !strings.ContainsAny(s, " '\"$`\\") {
		return s
	}
	return "'" + s + "'"
}
