// Package workercmd is the bus-integration-codex command: flags and
// environment, the contract printers (--events, --event-help), the
// self-test, and the worker itself on the chosen provider.
//
// It may import any non-command package and internal/cmd/servicecmd; cmd/bus-integration-codex and internal/cmd/stackcmd (for the executor wiring) import it.
package workercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/servicecmd"
	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/eventstore/redisstore"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/selftest"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// Name is the command name.
const Name = "bus-integration-codex"

// Version is reported in the contract.
const Version = "0.1.0"

// DefaultGroup is the unicast group workers share by default.
const DefaultGroup = "bus-integration-codex"

// Options are the parsed command-line options.
type Options struct {
	EventsURL      string
	Provider       string
	Workdir        string
	Model          string
	CodexCommand   string
	Timeout        time.Duration
	Concurrency    int
	Group          string
	Consumer       string
	ConnectTimeout time.Duration
	LogLevel       string
	Sandbox        string
	Approvals      string
	Processes      int
	Instructions   string
	LiveThreads    int
	LiveThreadTTL  time.Duration
	MaxRSSMiB      int
	ModelCatalog   string
	ResponseStore  string
	ResponseTTL    time.Duration
	ResponseBytes  int
	MetricsAddr    string
	MaxDeliveries  int
	AuthRecovery   time.Duration
	TrustUnstamped bool
	// WebSearch lets requests use hosted web search (when the provider
	// can); false answers them with a 400.
	WebSearch bool

	SelfTest  bool
	Events    bool
	Format    string
	EventHelp string
}

func parse(args []string, io cliutil.IO) (*Options, error) {
	env := io.Env
	o := &Options{}
	timeout, err := cliutil.Duration(env, "BUS_CODEX_TIMEOUT", 60*time.Second)
	if err != nil {
		return nil, err
	}
	defProcesses := DefaultProcesses()
	processes, err := cliutil.Int(env, "BUS_CODEX_PROCESSES", defProcesses)
	if err != nil {
		return nil, err
	}
	concurrency, err := cliutil.Int(env, "BUS_CODEX_CONCURRENCY", 0)
	if err != nil {
		return nil, err
	}
	connect, err := cliutil.Duration(env, "BUS_EVENTS_CONNECT_TIMEOUT", 30*time.Second)
	if err != nil {
		return nil, err
	}
	liveThreads, err := cliutil.Int(env, "BUS_CODEX_LIVE_THREADS", codex.DefaultLiveThreads)
	if err != nil {
		return nil, err
	}
	liveTTL, err := cliutil.Duration(env, "BUS_CODEX_LIVE_THREAD_TTL", codex.DefaultLiveThreadTTL)
	if err != nil {
		return nil, err
	}
	maxRSS, err := cliutil.Int(env, "BUS_CODEX_MAX_RSS_MIB", appserver.DefaultMaxRSS>>20)
	if err != nil {
		return nil, err
	}
	ttl, err := cliutil.Duration(env, "BUS_CODEX_RESPONSE_TTL", respstore.DefaultTTL)
	if err != nil {
		return nil, err
	}
	responseBytes, err := cliutil.Int(env, "BUS_CODEX_RESPONSE_STORE_BYTES", respstore.DefaultMaxMemoryBytes)
	if err != nil {
		return nil, err
	}
	maxDeliveries, err := cliutil.Int(env, "BUS_CODEX_MAX_DELIVERIES", worker.DefaultMaxDeliveries)
	if err != nil {
		return nil, err
	}
	authRecovery, err := cliutil.Duration(env, "BUS_CODEX_AUTH_RECOVERY_TIMEOUT", worker.DefaultAuthRecoveryTimeout)
	if err != nil {
		return nil, err
	}
	trustUnstamped, err := cliutil.Bool(env, "BUS_EVENTS_TRUST_UNSTAMPED", false)
	if err != nil {
		return nil, err
	}
	webSearch, err := cliutil.Bool(env, "BUS_CODEX_WEB_SEARCH", true)
	if err != nil {
		return nil, err
	}
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.StringVar(&o.EventsURL, "events-url", cliutil.String(env, "BUS_EVENTS_API_URL", "http://127.0.0.1:8081"), "Bus Events API base URL (env BUS_EVENTS_API_URL)")
	fs.StringVar(&o.Provider, "provider", cliutil.String(env, "BUS_CODEX_PROVIDER", "codex"), "execution provider: codex or static (env BUS_CODEX_PROVIDER)")
	fs.StringVar(&o.Workdir, "workdir", cliutil.String(env, "BUS_CODEX_WORKDIR", ""), "working directory for Codex App Server (env BUS_CODEX_WORKDIR; default: current directory)")
	fs.StringVar(&o.Model, "model", cliutil.String(env, "BUS_CODEX_MODEL", "auto"), "Codex model; auto or empty lets Codex choose (env BUS_CODEX_MODEL)")
	fs.StringVar(&o.CodexCommand, "codex-command", cliutil.String(env, "BUS_CODEX_COMMAND", "codex"), "Codex executable (env BUS_CODEX_COMMAND)")
	fs.DurationVar(&o.Timeout, "timeout", timeout, "request and turn timeout (env BUS_CODEX_TIMEOUT)")
	fs.IntVar(&o.Concurrency, "concurrency", concurrency, fmt.Sprintf("requests run at once (env BUS_CODEX_CONCURRENCY; default: %d per App Server process)", ConcurrencyPerProcess))
	fs.StringVar(&o.Group, "group", cliutil.String(env, "BUS_CODEX_GROUP", DefaultGroup), "unicast group shared by workers (env BUS_CODEX_GROUP)")
	fs.StringVar(&o.Consumer, "consumer", cliutil.String(env, "BUS_CODEX_CONSUMER", ""), "this worker's consumer name in the group (env BUS_CODEX_CONSUMER; default: host-pid)")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", connect, "how long to retry the first connection to the Events API (env BUS_EVENTS_CONNECT_TIMEOUT)")
	fs.StringVar(&o.Sandbox, "sandbox", cliutil.String(env, "BUS_CODEX_SANDBOX", "read-only"), "Codex sandbox: read-only, workspace-write or danger-full-access (env BUS_CODEX_SANDBOX)")
	fs.StringVar(&o.Approvals, "approvals", cliutil.String(env, "BUS_CODEX_APPROVALS", codex.ApprovalsDeny), "answer to Codex command/file approval requests: deny or approve (env BUS_CODEX_APPROVALS)")
	fs.IntVar(&o.Processes, "codex-processes", processes, "App Server processes in the warm pool (env BUS_CODEX_PROCESSES; default: CPUs/2)")
	fs.StringVar(&o.Instructions, "instructions", cliutil.String(env, "BUS_CODEX_INSTRUCTIONS", codex.InstructionsAuto), "model mode's base prompt: auto (the caller's; Codex's own once the backend refuses them), caller or codex (env BUS_CODEX_INSTRUCTIONS)")
	fs.IntVar(&o.LiveThreads, "live-threads", liveThreads, "conversation threads kept loaded for later turns (env BUS_CODEX_LIVE_THREADS)")
	fs.DurationVar(&o.LiveThreadTTL, "live-thread-ttl", liveTTL, "how long an idle conversation thread stays loaded (env BUS_CODEX_LIVE_THREAD_TTL)")
	fs.IntVar(&o.MaxRSSMiB, "codex-max-rss", maxRSS, "recycle an App Server process whose resident memory passes this many MiB (env BUS_CODEX_MAX_RSS_MIB; 0: never)")
	fs.StringVar(&o.ModelCatalog, "model-catalog", cliutil.String(env, "BUS_LLM_MODEL_CATALOG", ""), "model catalog file shared with the front door: unknown ids get 404, aliases pick the Codex model and effort (env BUS_LLM_MODEL_CATALOG; default: built-in codex-chatgpt)")
	fs.StringVar(&o.ResponseStore, "response-store", cliutil.String(env, "BUS_CODEX_RESPONSE_STORE", "memory"), "where Responses API responses are stored: memory, redis (BUS_EVENTS_REDIS_*) or postgres (BUS_EVENTS_POSTGRES_DSN) (env BUS_CODEX_RESPONSE_STORE)")
	fs.DurationVar(&o.ResponseTTL, "response-ttl", ttl, "how long stored responses are kept (env BUS_CODEX_RESPONSE_TTL)")
	fs.IntVar(&o.ResponseBytes, "response-store-bytes", responseBytes, "bound of the memory response store; the oldest responses are dropped past it (env BUS_CODEX_RESPONSE_STORE_BYTES)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", cliutil.String(env, "BUS_CODEX_METRICS_ADDR", ""), "serve GET /metrics (Prometheus), /healthz and /readyz on this address, e.g. 127.0.0.1:9464 (env BUS_CODEX_METRICS_ADDR; default: off)")
	fs.IntVar(&o.MaxDeliveries, "max-deliveries", maxDeliveries, "a request delivered more often than this is answered with an error and dead-lettered (env BUS_CODEX_MAX_DELIVERIES)")
	fs.DurationVar(&o.AuthRecovery, "auth-recovery-timeout", authRecovery, "exit when the Events API refuses the token for longer than this (env BUS_CODEX_AUTH_RECOVERY_TIMEOUT)")
	fs.BoolVar(&o.TrustUnstamped, "trust-unstamped", trustUnstamped, "trust events without identity_type, for an Events API that does not stamp publishers; the bus is then no trust boundary (env BUS_EVENTS_TRUST_UNSTAMPED)")
	fs.BoolVar(&o.WebSearch, "web-search", webSearch, "let requests use hosted web search (Responses web_search tools, chat web_search_options); false answers them with a 400 (env BUS_CODEX_WEB_SEARCH)")
	fs.StringVar(&o.LogLevel, "log-level", cliutil.String(env, "BUS_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env BUS_LOG_LEVEL)")
	fs.BoolVar(&o.SelfTest, "self-test", false, "run every operation through an in-process Events API and the static provider, then exit")
	fs.BoolVar(&o.Events, "events", false, "print the declared event contract and exit (see --format)")
	fs.StringVar(&o.Format, "format", "text", "--events output format: text, json or asyncapi")
	fs.StringVar(&o.EventHelp, "event-help", "", "explain one capability, e.g. codex.chat_completions.receive, and exit")
	if err := cliutil.ParseFlags(fs, args, io.Stdout); err != nil {
		return nil, err
	}
	switch {
	case o.Provider != "codex" && o.Provider != "static":
		return nil, cliutil.Usagef("--provider must be codex or static, not %q", o.Provider)
	case o.Timeout <= 0:
		return nil, cliutil.Usagef("--timeout must be positive")
	case o.Concurrency < 0 || (o.Concurrency == 0 && (flagSet(fs, "concurrency") || env.Getenv("BUS_CODEX_CONCURRENCY") != "")):
		return nil, cliutil.Usagef("--concurrency must be at least 1")
	case o.Instructions != codex.InstructionsAuto && o.Instructions != codex.InstructionsCaller && o.Instructions != codex.InstructionsCodex:
		return nil, cliutil.Usagef("--instructions must be auto, caller or codex, not %q", o.Instructions)
	case o.LiveThreads < 1:
		return nil, cliutil.Usagef("--live-threads must be at least 1")
	case o.LiveThreadTTL <= 0:
		return nil, cliutil.Usagef("--live-thread-ttl must be positive")
	case o.MaxRSSMiB < 0:
		return nil, cliutil.Usagef("--codex-max-rss must not be negative")
	case o.ResponseStore != "memory" && o.ResponseStore != "redis" && o.ResponseStore != "postgres":
		return nil, cliutil.Usagef("--response-store must be memory, redis or postgres, not %q", o.ResponseStore)
	case o.ResponseTTL <= 0:
		return nil, cliutil.Usagef("--response-ttl must be positive")
	case o.ResponseBytes < 1<<20:
		return nil, cliutil.Usagef("--response-store-bytes must be at least 1048576 (1 MiB)")
	case o.Processes < 1:
		return nil, cliutil.Usagef("--codex-processes must be at least 1")
	case o.MaxDeliveries < 1:
		return nil, cliutil.Usagef("--max-deliveries must be at least 1")
	case o.AuthRecovery <= 0:
		return nil, cliutil.Usagef("--auth-recovery-timeout must be positive")
	case o.Approvals != codex.ApprovalsDeny && o.Approvals != codex.ApprovalsApprove:
		return nil, cliutil.Usagef("--approvals must be deny or approve, not %q", o.Approvals)
	case o.Sandbox != "read-only" && o.Sandbox != "workspace-write" && o.Sandbox != "danger-full-access":
		return nil, cliutil.Usagef("--sandbox must be read-only, workspace-write or danger-full-access, not %q", o.Sandbox)
	}
	if err := events.ValidateKey("group", o.Group); err != nil {
		return nil, cliutil.Usagef("--group: %v", err)
	}
	if o.Consumer == "" {
		host, _ := os.Hostname()
		o.Consumer = sanitize(fmt.Sprintf("%s-%d", host, os.Getpid()))
	}
	if err := events.ValidateKey("consumer", o.Consumer); err != nil {
		return nil, cliutil.Usagef("--consumer: %v", err)
	}
	if o.Concurrency == 0 {
		o.Concurrency = ConcurrencyPerProcess * o.Processes
	}
	return o, nil
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// ConcurrencyPerProcess is how many requests one App Server process
// carries at once by default. A turn waiting for its model costs no CPU;
// what a request costs is the App Server's CPU around the wait (about
// 60–90 ms on a 2-core machine, docs/BENCHMARKS.md sections 4 and 6).
// The value is checked by make bench ("Sizing the default"): it must
// admit the 8 requests at once of issue 16's waiting goal, and stay under
// the CPU bound — model latency × cores per process / CPU per request,
// about 25 with a 1 s model and two cores per process, more with the
// seconds real models take — and the memory bound (hundreds of KiB per
// request in flight against a 1 GiB recycling limit: thousands). 16 is
// in between, with headroom for turns that cost more CPU than a plain
// answer (agent mode, tool loops, long prompts) and for faster models.
// Beyond what the CPU runs, admitting more stretches every turn without
// adding throughput; requests left in the group go to other workers.
const ConcurrencyPerProcess = 16

// DefaultProcesses is the default pool size: one App Server process per
// two CPUs, at least one.
func DefaultProcesses() int { return max(1, runtime.NumCPU()/2) }

// maxRSSBytes turns --codex-max-rss into appserver.PoolConfig.MaxRSS.
func maxRSSBytes(mib int) int64 {
	if mib == 0 {
		return -1
	}
	return int64(mib) << 20
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

// Run runs the command.
func Run(ctx context.Context, args []string, io cliutil.IO) int {
	return cliutil.Run(ctx, args, io, Name, parse, run)
}

func run(ctx context.Context, o *Options, io cliutil.IO) error {
	svc := contract.Worker(Version, o.Group)
	switch {
	case o.EventHelp != "":
		c, ok := svc.Lookup(o.EventHelp)
		if !ok {
			var ids []string
			for _, c := range svc.Capabilities {
				ids = append(ids, c.ID)
			}
			return cliutil.Usagef("unknown capability %q (known: %s)", o.EventHelp, strings.Join(ids, ", "))
		}
		return contract.RenderHelp(io.Stdout, c)
	case o.Events:
		if err := contract.Render(io.Stdout, svc, o.Format); err != nil {
			return cliutil.Usagef("--format: %v", err)
		}
		return nil
	case o.SelfTest:
		if err := selftest.Run(ctx, io.Stdout); err != nil {
			return fmt.Errorf("self-test failed: %w", err)
		}
		return nil
	}
	return serve(ctx, o, svc, io)
}

func serve(ctx context.Context, o *Options, svc contract.Service, io cliutil.IO) error {
	log, err := servicecmd.Logger(io.Stderr, o.LogLevel)
	if err != nil {
		return err
	}
	if err := checkProvider(o); err != nil {
		return err
	}
	obs, err := servicecmd.Observe(ctx, io.Env, Name, "", log) // served with readiness: serveMetrics
	if err != nil {
		return err
	}
	defer obs.Close(log)
	tr, reg := obs.Tracing, obs.Registry
	bus, err := servicecmd.Connect(io.Env, o.EventsURL, "the worker", log)
	if err != nil {
		return err
	}
	defer bus.Close()
	cat, err := catalog.LoadOrDefault(o.ModelCatalog)
	if err != nil {
		return err
	}
	store, err := OpenResponseStore(ctx, o, io.Env)
	if err != nil {
		return err
	}
	defer store.Close()
	w, err := worker.New(worker.Config{
		Client:       bus.Client,
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: o.Group, Consumer: o.Consumer, Concurrency: o.Concurrency, Timeout: o.Timeout,
		ConnectTimeout: o.ConnectTimeout, MaxDeliveries: o.MaxDeliveries, AuthRecoveryTimeout: o.AuthRecovery,
		TokenExpiry: bus.TokenExpiry, TrustUnstamped: o.TrustUnstamped, Logger: log,
		Metrics: metrics.NewWorker(reg), Tracer: tr.Tracer,
		OnReady: func() {
			log.Info("worker connected", "events_url", o.EventsURL, "provider", o.Provider, "group", o.Group, "consumer", o.Consumer,
				"concurrency", o.Concurrency, "token_from", bus.TokenFrom)
		},
	})
	if err != nil {
		return err
	}
	stopMetrics, err := serveMetrics(o.MetricsAddr, w, reg, log)
	if err != nil {
		return err
	}
	defer stopMetrics()

	// Subscribe first, so requests wait in the group (at most Concurrency
	// taken) while the provider warms up.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(runCtx) }()
	type built struct {
		p   turn.Provider
		err error
	}
	provided := make(chan built, 1)
	go func() {
		p, err := newProvider(runCtx, o, log, io.Env, reg)
		provided <- built{p, err}
	}()
	var runErr error
	select {
	case b := <-provided:
		if b.err != nil {
			stop()
			<-runDone
			return b.err
		}
		w.SetExecutor(newExecutor(o, log, b.p, cat, store))
		log.Debug("provider ready", "provider", o.Provider)
		runErr = <-runDone
		b.p.Close()
	case runErr = <-runDone:
		stop()
		if b := <-provided; b.p != nil {
			b.p.Close()
		}
	}
	if runErr != nil {
		if errors.Is(runErr, worker.ErrTokenRefused) {
			return fmt.Errorf("%v (longer than --auth-recovery-timeout %s): rotate the service token", bus.Explain(runErr), o.AuthRecovery)
		}
		return bus.Explain(runErr)
	}
	log.Info("worker stopped")
	return nil
}

// checkProvider fails fast, before anything connects, on a provider that
// cannot start: a workdir that is not a directory, a codex command that is
// not installed.
func checkProvider(o *Options) error {
	if o.Provider != "codex" {
		return nil
	}
	if o.Workdir != "" {
		if st, err := os.Stat(o.Workdir); err != nil || !st.IsDir() {
			return cliutil.Usagef("--workdir %q is not a directory", o.Workdir)
		}
	}
	if _, err := exec.LookPath(o.CodexCommand); err != nil {
		return codexNotFound(o.CodexCommand)
	}
	return nil
}

func codexNotFound(command string) error {
	return fmt.Errorf("the codex command %q was not found: install the Codex CLI (npm install -g @openai/codex), set --codex-command, or use --provider static", command)
}

// NewExecutor builds the executor o describes: its provider, catalog and
// response store. closeAll releases them.
func NewExecutor(ctx context.Context, o *Options, log *slog.Logger, env busconfig.Env) (*executor.Executor, func(), error) {
	cat, err := catalog.LoadOrDefault(o.ModelCatalog)
	if err != nil {
		return nil, nil, err
	}
	store, err := OpenResponseStore(ctx, o, env)
	if err != nil {
		return nil, nil, err
	}
	provider, err := NewProvider(ctx, o, log, env)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return newExecutor(o, log, provider, cat, store), func() { provider.Close(); store.Close() }, nil
}

// newExecutor is the executor o describes on provider p.
func newExecutor(o *Options, log *slog.Logger, p turn.Provider, cat *catalog.Catalog, store respstore.Store) *executor.Executor {
	return &executor.Executor{Provider: p, Catalog: cat, Store: store, StoreTTL: o.ResponseTTL, Logger: log, DisableWebSearch: !o.WebSearch}
}

// OpenResponseStore opens the response store o names, configured like the
// durable Events backends.
func OpenResponseStore(ctx context.Context, o *Options, env busconfig.Env) (respstore.Store, error) {
	switch o.ResponseStore {
	case "redis":
		cfg, err := redisstore.FromEnv(env)
		if err != nil {
			return nil, err
		}
		if cfg.Prefix == "" {
			cfg.Prefix = redisstore.DefaultPrefix
		}
		return respstore.OpenRedis(ctx, respstore.RedisConfig{Addr: cfg.Addr, Password: cfg.Password, Prefix: cfg.Prefix})
	case "postgres":
		dsn := env.Getenv("BUS_EVENTS_POSTGRES_DSN")
		if dsn == "" {
			return nil, cliutil.Usagef("--response-store postgres needs BUS_EVENTS_POSTGRES_DSN")
		}
		return respstore.OpenPostgres(ctx, dsn)
	default:
		return respstore.NewMemory(respstore.WithMaxBytes(int64(o.ResponseBytes))), nil
	}
}

// NewProvider builds the provider o selects: static, or codex on a warm App
// Server pool (with one-line errors when codex is missing or not logged in).
func NewProvider(ctx context.Context, o *Options, log *slog.Logger, env busconfig.Env) (turn.Provider, error) {
	return newProvider(ctx, o, log, env, nil)
}

// newProvider is NewProvider registering the codex provider's metrics on
// reg (none when nil).
func newProvider(ctx context.Context, o *Options, log *slog.Logger, env busconfig.Env, reg prometheus.Registerer) (turn.Provider, error) {
	if o.Provider == "static" {
		return static.New(), nil
	}
	workdir := o.Workdir
	if workdir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("--workdir: %w", err)
		}
		workdir = wd
	}
	if st, err := os.Stat(workdir); err != nil || !st.IsDir() {
		return nil, cliutil.Usagef("--workdir %q is not a directory", workdir)
	}
	p, err := codex.New(ctx, codex.Config{
		Command: o.CodexCommand, Workdir: workdir, Model: o.Model, Sandbox: o.Sandbox,
		Approvals: o.Approvals, Processes: o.Processes, Instructions: o.Instructions,
		LiveThreads: o.LiveThreads, LiveThreadTTL: o.LiveThreadTTL, MaxRSS: maxRSSBytes(o.MaxRSSMiB), Logger: log,
		DenyRead: secretPaths(env, workdir), Metrics: reg,
	})
	switch {
	case errors.Is(err, codex.ErrNotInstalled):
		return nil, codexNotFound(o.CodexCommand)
	case errors.Is(err, codex.ErrNotLoggedIn):
		home := env.Getenv("CODEX_HOME")
		if home == "" {
			home = "~/.codex"
		}
		return nil, fmt.Errorf("codex is not logged in (CODEX_HOME=%s): run `codex login`, or use --provider static", home)
	case err != nil:
		return nil, err
	}
	return p, nil
}
