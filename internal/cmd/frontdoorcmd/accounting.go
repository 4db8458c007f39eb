package frontdoorcmd

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/entitlement"
	"github.com/busdk/bus-integration-codex/internal/eventstore/redisstore"
	"github.com/busdk/bus-integration-codex/internal/usage"
)

// Backends of --usage-backend, --billing-backend and --entitlements-store.
var (
	usageBackends   = []string{"memory", "redis", "postgres", "none"}
	billingBackends = []string{"none", "policy"}
	counterStores   = []string{"memory", "redis", "postgres"}
)

// postgresDSNVar is the PostgreSQL DSN the durable backends share with
// the Events API's.
const postgresDSNVar = "BUS_EVENTS_POSTGRES_DSN"

// usageCloseTimeout bounds writing the queued usage records on shutdown.
const usageCloseTimeout = 10 * time.Second

// validateAccounting checks the usage and billing options and settles
// their defaults: --usage-backend memory, and --billing-backend policy
// when a policy is configured (--entitlements or BUS_LLM_DEFAULT_*), else
// none.
func (o *options) validateAccounting(env busconfig.Env) error {
	if o.usageBackend == "" {
		o.usageBackend = "memory"
	}
	if !slices.Contains(usageBackends, o.usageBackend) {
		return cliutil.Usagef("--usage-backend must be memory, redis, postgres or none, not %q", o.usageBackend)
	}
	if o.usageRetention <= 0 {
		return cliutil.Usagef("--usage-retention must be positive, not %s", o.usageRetention)
	}
	envPolicy := slices.ContainsFunc(entitlement.EnvVars(), func(k string) bool { return env.Getenv(k) != "" })
	if o.billingBackend == "" {
		o.billingBackend = "none"
		if o.entitlements != "" || envPolicy {
			o.billingBackend = "policy"
		}
	}
	if !slices.Contains(billingBackends, o.billingBackend) {
		return cliutil.Usagef("--billing-backend must be none or policy, not %q", o.billingBackend)
	}
	if !slices.Contains(counterStores, o.entitlementsStore) {
		return cliutil.Usagef("--entitlements-store must be memory, redis or postgres, not %q", o.entitlementsStore)
	}
	switch {
	case o.billingBackend == "none" && o.entitlements != "":
		return cliutil.Usagef("--entitlements needs --billing-backend policy (it is none)")
	case o.billingBackend == "policy" && o.entitlements == "" && !envPolicy:
		return cliutil.Usagef("--billing-backend policy needs a policy: --entitlements FILE (env BUS_LLM_ENTITLEMENTS) or BUS_LLM_DEFAULT_* limits")
	}
	return nil
}

// accounting is the front door's usage writer and entitlement enforcer.
type accounting struct {
	usage    *usage.Writer
	enforcer *entitlement.Enforcer
	closers  []func() error
}

// openAccounting opens the usage ledger and the entitlement counters the
// options name, configured like the durable Events backends.
func openAccounting(ctx context.Context, o *options, env busconfig.Env, log *slog.Logger) (_ *accounting, err error) {
	a := &accounting{}
	defer func() {
		if err != nil {
			_ = a.close()
		}
	}()
	if o.usageBackend != "none" {
		var l usage.Ledger
		switch o.usageBackend {
		case "redis":
			cfg, err := redisConfig(env)
			if err != nil {
				return nil, err
			}
			l, err = usage.OpenRedis(ctx, usage.RedisConfig{Addr: cfg.Addr, Password: cfg.Password, Prefix: cfg.Prefix, Retention: o.usageRetention})
			if err != nil {
				return nil, err
			}
		case "postgres":
			dsn, err := postgresDSN(env, "--usage-backend postgres")
			if err != nil {
				return nil, err
			}
			if l, err = usage.OpenPostgres(ctx, dsn, o.usageRetention); err != nil {
				return nil, err
			}
		default:
			l = usage.NewMemory(usage.MemoryOptions{Retention: o.usageRetention})
		}
		a.closers = append(a.closers, l.Close)
		a.usage = usage.NewWriter(l, usage.WriterOptions{Logger: log})
		w := a.usage
		a.closers = append(a.closers, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), usageCloseTimeout)
			defer cancel()
			err := w.Close(ctx)
			if st := w.Stats(); st.Dropped > 0 || st.Failed > 0 {
				log.Warn("usage records lost", "dropped", st.Dropped, "failed", st.Failed, "written", st.Written)
			}
			return err
		})
	}
	if o.billingBackend == "policy" {
		p := &entitlement.Policy{}
		if o.entitlements != "" {
			if p, err = entitlement.Load(o.entitlements); err != nil {
				return nil, err
			}
		}
		if err := p.ApplyEnv(env); err != nil {
			return nil, cliutil.Usagef("%v", err)
		}
		var s entitlement.Store
		switch o.entitlementsStore {
		case "redis":
			cfg, err := redisConfig(env)
			if err != nil {
				return nil, err
			}
			if s, err = entitlement.OpenRedis(ctx, entitlement.RedisConfig{Addr: cfg.Addr, Password: cfg.Password, Prefix: cfg.Prefix}); err != nil {
				return nil, err
			}
		case "postgres":
			dsn, err := postgresDSN(env, "--entitlements-store postgres")
			if err != nil {
				return nil, err
			}
			if s, err = entitlement.OpenPostgres(ctx, dsn); err != nil {
				return nil, err
			}
		default:
			s = entitlement.NewMemory()
		}
		a.closers = append(a.closers, s.Close)
		a.enforcer = entitlement.New(p, s, entitlement.Options{Logger: log})
	}
	log.Info("usage and limits", "usage_backend", o.usageBackend, "billing_backend", o.billingBackend,
		"entitlements", o.entitlements, "entitlements_store", o.entitlementsStore)
	return a, nil
}

// close writes the queued usage records and closes the stores, last
// opened first.
func (a *accounting) close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	return errors.Join(errs...)
}

func redisConfig(env busconfig.Env) (redisstore.Config, error) {
	cfg, err := redisstore.FromEnv(env)
	if err != nil {
		return cfg, cliutil.Usagef("%v", err)
	}
	return cfg, nil
}

func postgresDSN(env busconfig.Env, what string) (string, error) {
	dsn := env.Getenv(postgresDSNVar)
	if dsn == "" {
		return "", cliutil.Usagef("%s needs %s", what, postgresDSNVar)
	}
	return dsn, nil
}
