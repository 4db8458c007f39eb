// Package stackcmd is the bus-local-stack command (make run): the Events API on
// the memory backend, a worker and the OpenAI-compatible front door, in one
// process on loopback, with a local llm:proxy token written for the user.
// Ctrl-C stops everything, draining requests in flight.
package stackcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/workercmd"
	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/internal/frontdoor"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
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
	fs.IntVar(&o.worker.Concurrency, "concurrency", runtime.NumCPU(), "requests run at once")
	fs.StringVar(&o.catalogPath, "model-catalog", cliutil.String(env, "BUS_LLM_MODEL_CATALOG", ""), "model catalog file (env BUS_LLM_MODEL_CATALOG; default: codex-chatgpt)")
	fs.DurationVar(&o.tokenTTL, "token-ttl", 12*time.Hour, "lifetime of the token written to auth/api-token")
	logLevel := fs.String("log-level", cliutil.String(env, "BUS_LOG_LEVEL", "warn"), "log level: debug, info, warn, error (env BUS_LOG_LEVEL)")
	if err := cliutil.Parse(fs, args, io.Stdout); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, cliutil.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if o.worker.Provider != "codex" && o.worker.Provider != "static" {
		return nil, cliutil.Usagef("--provider must be codex or static, not %q", o.worker.Provider)
	}
	o.worker.LogLevel = *logLevel
	o.worker.Approvals = "deny"
	o.worker.Processes = max(1, runtime.NumCPU()/2)
	o.worker.Group = workercmd.DefaultGroup
	o.worker.Consumer = "local-stack"
	o.worker.ResponseStore = "memory"
	o.worker.ResponseTTL = respstore.DefaultTTL
	return o, nil
}

// Run runs the command.
func Run(ctx context.Context, args []string, io cliutil.IO) int {
	o, err := parse(args, io)
	if errors.Is(err, cliutil.ErrHelp) {
		return cliutil.ExitOK
	}
	if err != nil {
		return cliutil.Report(io.Stderr, Name, err)
	}
	return cliutil.Report(io.Stderr, Name, run(ctx, o, io))
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
	issue := func(ttl time.Duration) (string, error) {
		now := time.Now()
		return auth.Issue(key, auth.Claims{Subject: identity, Audience: []string{auth.Audience}, Scopes: []string{llmapi.Scope}, IssuedAt: now, ExpiresAt: now.Add(ttl)})
	}

	// The provider first: a missing or logged-out codex is the most
	// likely problem and is reported before anything listens.
	o.worker.ModelCatalog = o.catalogPath
	executor, closeExecutor, err := workercmd.NewExecutor(ctx, &o.worker, log, io.Env)
	if err != nil {
		return err
	}
	defer closeExecutor()

	eventsL, err := net.Listen("tcp", o.eventsAddr)
	if err != nil {
		return fmt.Errorf("events api: listen on %s: %w", o.eventsAddr, err)
	}
	frontL, err := net.Listen("tcp", o.addr)
	if err != nil {
		eventsL.Close()
		return fmt.Errorf("front door: listen on %s: %w", o.addr, err)
	}
	verifier := auth.NewVerifier(key, auth.Audience)
	serviceToken, err := issue(o.tokenTTL + 24*time.Hour)
	if err != nil {
		return err
	}
	eventsURL := "http://" + eventsL.Addr().String()
	newClient := func() (*events.Client, error) {
		return events.NewClient(eventsURL, events.WithToken(serviceToken), events.WithLogger(log),
			events.WithRetry(events.RetryPolicy{Enabled: true, Min: 50 * time.Millisecond, Max: time.Second}))
	}
	workerClient, err := newClient()
	if err != nil {
		return err
	}
	defer workerClient.CloseIdleConnections()
	frontClient, err := newClient()
	if err != nil {
		return err
	}
	defer frontClient.CloseIdleConnections()

	svc := contract.Worker(workercmd.Version, o.worker.Group)
	workerReady := make(chan struct{})
	w, err := worker.New(worker.Config{
		Client: workerClient, Executor: executor,
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: o.worker.Group, Consumer: o.worker.Consumer, Concurrency: o.worker.Concurrency, Timeout: o.worker.Timeout,
		ConnectTimeout: 10 * time.Second, Logger: log, OnReady: func() { close(workerReady) },
	})
	if err != nil {
		return err
	}
	front, err := frontdoor.New(frontdoor.Config{
		Events: frontClient, Verifier: verifier, Catalog: cat, Timeout: o.worker.Timeout,
		ListenerRequired: true, ConnectTimeout: 10 * time.Second, Logger: log,
	})
	if err != nil {
		return err
	}

	// Supervision: the first component to fail stops the others; Ctrl-C
	// stops all. The front door stops first (draining its requests), then
	// the worker, then the Events API.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	eventsCtx, stopEvents := context.WithCancel(context.WithoutCancel(ctx))
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEvents()
	defer stopWorker()
	eventsDone := make(chan error, 1)
	workerDone := make(chan error, 1)
	frontDone := make(chan error, 1)
	go func() {
		err := eventsapi.New(eventsapi.Config{Backend: memory.New(memory.Options{}), Verifier: verifier, Logger: log}).Serve(eventsCtx, eventsL)
		eventsDone <- err
		stop(fmt.Errorf("events api stopped: %w", err))
	}()
	go func() {
		err := w.Run(workerCtx)
		workerDone <- err
		stop(fmt.Errorf("worker stopped: %w", err))
	}()
	go func() {
		err := front.Serve(ctx, frontL)
		frontDone <- err
		stop(fmt.Errorf("front door stopped: %w", err))
	}()

	tokenFile, err := busconfig.TokenFile(io.Env)
	if err != nil {
		return err
	}
	userToken, err := issue(o.tokenTTL)
	if err != nil {
		return err
	}
	if err := busconfig.WriteSecretFile(tokenFile, []byte(userToken+"\n")); err != nil {
		return err
	}
	select {
	case <-workerReady:
	case <-ctx.Done():
	}
	select {
	case <-front.Ready():
		printBanner(io.Stdout, "http://"+frontL.Addr().String(), tokenFile, o.worker.Provider)
	case <-ctx.Done():
	}

	<-ctx.Done()
	fmt.Fprintln(io.Stdout, "stopping...")
	frontErr := <-frontDone
	stopWorker()
	workerErr := <-workerDone
	stopEvents()
	eventsErr := <-eventsDone
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return errors.Join(cause, frontErr, workerErr, eventsErr)
	}
	return errors.Join(frontErr, workerErr, eventsErr)
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
