// Package frontdoorcmd is the bus-api-provider-llm command: the
// OpenAI-compatible REST front door in events mode
// (--execution-backend events), which turns /v1/* requests into bus.llm.*
// events on the Bus Events API and answers with the correlated responses.
// Its metrics are served on GET /metrics, on its own port or on
// --metrics-addr; its spans go out by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
// is set.
//
// It may import any non-command package and internal/cmd/servicecmd; only cmd/bus-api-provider-llm imports it.
package frontdoorcmd

import (
	"context"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/servicecmd"
	"github.com/busdk/bus-integration-codex/internal/frontdoor"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/usage"
)

// Name is the command name.
const Name = "bus-api-provider-llm"

// SecretVars returns the variables the caller JWT secret is read from, in
// order, before falling back to the generated local secret.
func SecretVars() []string {
	return []string{"BUS_LLM_JWT_SECRET", "BUS_API_JWT_SECRET", "BUS_AUTH_HS256_SECRET"}
}

// options are the parsed flags.
type options struct {
	addr, execBackend, backendURL, eventsURL     string
	modelsBackend, modelCatalog                  string
	usageBackend, billingBackend, runtimeBackend string
	timeout, connectTimeout, shutdownTimeout     time.Duration
	streamErrorGrace                             time.Duration
	listenerRequired, trustUnstamped             bool
	logLevel, metricsAddr                        string
	usageRetention                               time.Duration
	entitlements, entitlementsStore              string
}

func parse(args []string, io cliutil.IO) (*options, error) {
	env := io.Env
	o := &options{}
	durations := []struct {
		dst      *time.Duration
		flag     string
		key      string
		def      time.Duration
		usage    string
		positive bool
	}{
		{&o.timeout, "timeout", "BUS_LLM_TIMEOUT", frontdoor.DefaultTimeout, "how long a request waits for its answer", true},
		{&o.connectTimeout, "connect-timeout", "BUS_LLM_CONNECT_TIMEOUT", 30 * time.Second, "how long startup retries an unreachable Events API before failing", true},
		{&o.shutdownTimeout, "shutdown-timeout", "BUS_LLM_SHUTDOWN_TIMEOUT", frontdoor.DefaultShutdownTimeout, "how long shutdown lets in-flight requests finish", true},
		{&o.streamErrorGrace, "stream-error-grace", "BUS_LLM_STREAM_ERROR_GRACE", frontdoor.DefaultErrorGrace, "how long a stream whose error response arrived waits for chunks still in flight", true},
	}
	defaults := make([]time.Duration, len(durations))
	for i, d := range durations {
		v, err := cliutil.Duration(env, d.key, d.def)
		if err != nil {
			return nil, err
		}
		defaults[i] = v
	}
	listenerRequired, err := cliutil.Bool(env, "BUS_EVENTS_LISTENER_REQUIRED", false)
	if err != nil {
		return nil, err
	}
	trustUnstamped, err := cliutil.Bool(env, "BUS_EVENTS_TRUST_UNSTAMPED", false)
	if err != nil {
		return nil, err
	}
	usageRetention, err := cliutil.Duration(env, "BUS_LLM_USAGE_RETENTION", usage.DefaultRetention)
	if err != nil {
		return nil, err
	}
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", cliutil.String(env, "BUS_LLM_ADDR", "127.0.0.1:8080"), "listen address (env BUS_LLM_ADDR)")
	fs.StringVar(&o.execBackend, "execution-backend", cliutil.String(env, "BUS_LLM_EXECUTION_BACKEND", "http"),
		"execution backend: http (HTTP proxy mode, not in this build) or events (env BUS_LLM_EXECUTION_BACKEND)")
	fs.StringVar(&o.backendURL, "backend-url", cliutil.String(env, "BUS_LLM_BACKEND_URL", ""),
		"upstream URL of HTTP proxy mode; accepted for compatibility, unused in events mode (env BUS_LLM_BACKEND_URL)")
	fs.StringVar(&o.eventsURL, "events-url", cliutil.String(env, "BUS_EVENTS_API_URL", "http://127.0.0.1:8081"), "Bus Events API base URL (env BUS_EVENTS_API_URL)")
	fs.StringVar(&o.modelsBackend, "models-backend", cliutil.String(env, "BUS_LLM_MODELS_BACKEND", "catalog"),
		"where /v1/models comes from: catalog (proxy is not in this build) (env BUS_LLM_MODELS_BACKEND)")
	fs.StringVar(&o.modelCatalog, "model-catalog", cliutil.String(env, "BUS_LLM_MODEL_CATALOG", ""),
		"model catalog file, an OpenAI model list; the built-in catalog (codex-chatgpt) when empty (env BUS_LLM_MODEL_CATALOG)")
	fs.StringVar(&o.usageBackend, "usage-backend", cliutil.String(env, "BUS_LLM_USAGE_BACKEND", "memory"),
		"usage ledger: memory, redis (BUS_EVENTS_REDIS_*), postgres (BUS_EVENTS_POSTGRES_DSN) or none (env BUS_LLM_USAGE_BACKEND)")
	fs.StringVar(&o.billingBackend, "billing-backend", cliutil.String(env, "BUS_LLM_BILLING_BACKEND", ""),
		"entitlements: policy (limits from --entitlements and BUS_LLM_DEFAULT_*) or none; policy when either is set (env BUS_LLM_BILLING_BACKEND)")
	fs.StringVar(&o.entitlements, "entitlements", cliutil.String(env, "BUS_LLM_ENTITLEMENTS", ""), "entitlement policy file, JSON (env BUS_LLM_ENTITLEMENTS)")
	fs.StringVar(&o.entitlementsStore, "entitlements-store", cliutil.String(env, "BUS_LLM_ENTITLEMENTS_STORE", "memory"),
		"where the limit counters live: memory (one front door), redis or postgres (shared by replicas) (env BUS_LLM_ENTITLEMENTS_STORE)")
	fs.StringVar(&o.runtimeBackend, "runtime-backend", cliutil.String(env, "BUS_LLM_RUNTIME_BACKEND", ""), "runtime wake-up backend: only none in this build (env BUS_LLM_RUNTIME_BACKEND)")
	for i, d := range durations {
		fs.DurationVar(d.dst, d.flag, defaults[i], d.usage+" (env "+d.key+")")
	}
	fs.BoolVar(&o.trustUnstamped, "trust-unstamped", trustUnstamped, "accept responses without identity_type, for an Events API that does not stamp publishers; the bus is then no trust boundary (env BUS_EVENTS_TRUST_UNSTAMPED)")
	fs.DurationVar(&o.usageRetention, "usage-retention", usageRetention, "how long usage records are kept (env BUS_LLM_USAGE_RETENTION)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", cliutil.String(env, "BUS_LLM_METRICS_ADDR", ""),
		"serve GET /metrics (Prometheus) on this address of its own instead of on --addr, e.g. 127.0.0.1:9465 for a public front door (env BUS_LLM_METRICS_ADDR)")
	fs.StringVar(&o.logLevel, "log-level", cliutil.String(env, "BUS_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env BUS_LOG_LEVEL)")
	if err := cliutil.ParseFlags(fs, args, io.Stdout); err != nil {
		return nil, err
	}
	for _, d := range durations {
		if d.positive && *d.dst <= 0 {
			return nil, cliutil.Usagef("--%s must be positive, not %s", d.flag, *d.dst)
		}
	}
	o.listenerRequired = listenerRequired
	if err := o.validate(); err != nil {
		return nil, err
	}
	return o, o.validateAccounting(env)
}

// validate refuses the backends this build does not implement.
func (o *options) validate() error {
	switch o.execBackend {
	case "events":
	case "http":
		return cliutil.Usagef("--execution-backend http (HTTP proxy mode) is not implemented by this build; run with --execution-backend events (or BUS_LLM_EXECUTION_BACKEND=events) against a Bus Events API and a worker such as bus-integration-codex")
	default:
		return cliutil.Usagef("--execution-backend must be http or events, not %q", o.execBackend)
	}
	switch o.modelsBackend {
	case "catalog":
	case "proxy":
		return cliutil.Usagef("--models-backend proxy is not implemented by this build; use --models-backend catalog with --model-catalog")
	default:
		return cliutil.Usagef("--models-backend must be catalog or proxy, not %q", o.modelsBackend)
	}
	if o.runtimeBackend != "" && o.runtimeBackend != "none" {
		return cliutil.Usagef("--runtime-backend %s is not implemented by this build; leave it empty or set it to none", o.runtimeBackend)
	}
	return nil
}

// Run runs the command.
func Run(ctx context.Context, args []string, io cliutil.IO) int {
	return cliutil.Run(ctx, args, io, Name, parse, run)
}

func run(ctx context.Context, o *options, io cliutil.IO) error {
	log, err := servicecmd.Logger(io.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	cat, err := catalog.LoadOrDefault(o.modelCatalog)
	if err != nil {
		return err
	}
	key, source, err := auth.ResolveSecret(io.Env, SecretVars()...)
	if err != nil {
		return fmt.Errorf("caller jwt secret: %w", err)
	}
	bus, err := servicecmd.Connect(io.Env, o.eventsURL, "the front door", log)
	if err != nil {
		return err
	}
	defer bus.Close()
	if o.backendURL != "" {
		log.Info("--backend-url is ignored in events mode")
	}
	acct, err := openAccounting(ctx, o, io.Env, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := acct.close(); err != nil {
			log.Warn("closing the usage ledger and limit counters", "err", err)
		}
	}()
	obs, err := servicecmd.Observe(ctx, io.Env, Name, o.metricsAddr, log)
	if err != nil {
		return err
	}
	defer obs.Close(log)
	tr, reg, metricsHandler := obs.Tracing, obs.Registry, obs.Handler
	srv, err := frontdoor.New(frontdoor.Config{
		Events:           bus.Client,
		Verifier:         auth.NewVerifier(key, auth.Audience),
		Catalog:          cat,
		Usage:            acct.usage,
		Entitlements:     acct.enforcer,
		Timeout:          o.timeout,
		ListenerRequired: o.listenerRequired,
		ConnectTimeout:   o.connectTimeout,
		ErrorGrace:       o.streamErrorGrace,
		ShutdownTimeout:  o.shutdownTimeout,
		TrustUnstamped:   o.trustUnstamped,
		Logger:           log,
		Metrics:          metrics.NewFrontDoor(reg),
		MetricsHandler:   metricsHandler,
		Tracer:           tr.Tracer,
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.addr, err)
	}
	log.Info("starting front door", "execution_backend", o.execBackend, "events_url", bus.URL,
		"catalog", cat.Source(), "jwt_secret_from", source, "token_from", bus.TokenFrom, "listener_required", o.listenerRequired)
	return bus.Explain(srv.Serve(ctx, l))
}
