// Package codex is the execution provider that runs turns through a warm
// pool of Codex App Server processes (package appserver).
//
// # Modes
//
// Each request runs in the mode its catalog entry names (turn.Request.Mode):
//
//   - model (the default): the model receives the caller's instructions,
//     messages and tools and nothing else of Codex's. Codex's base prompt is
//     replaced by the caller's system/developer text (or a short neutral
//     default), and every Codex tool, skill, permission, environment and
//     AGENTS.md block is switched off on the thread; the thread runs in an
//     empty directory without a shell snapshot. A per-thread model catalog
//     entry keeps client tools plain functions (Codex's catalog puts newer
//     models in "code mode", where client tools become JavaScript inside its
//     own exec tool). If the backend refuses custom instructions, the
//     request is retried once with Codex's own base prompt and the provider
//     remembers that for its login (Config.Instructions forces either way).
//   - agent: Codex as a coding agent in Config.Workdir with its own tools,
//     inside the configured sandbox, as the Codex CLI runs. Paths in
//     Config.DenyRead (the worker's secrets) are unreadable there: the
//     thread's permission profile extends the sandbox mode's built-in
//     profile with those paths denied (on Linux an empty, mode-000 tmpfs
//     or file mounted over each path inside Codex's bubblewrap sandbox).
//
// # Conversations
//
// A finished thread stays loaded for a while. A later request whose
// history extends a live thread's transcript exactly (the next message of
// a chat, a previous_response_id chain, the outputs of a tool step)
// continues on that thread: the model request is the earlier one plus the
// new items, under the same prompt_cache_key. Anything else — another
// worker, a branched or edited history, an evicted thread — runs on a
// fresh thread with the whole history injected as items. Live threads are
// bounded in number and idle time.
//
// # Tool steps
//
// Client tools are App Server dynamic tools whose calls are held, not run.
// A model step is complete when its response has ended
// (rawResponse/completed) and an item/tool/call has arrived for every call
// of it; the calls then go back to the client at once, in the model's
// order, with that step's exact usage, and the turn stays open: the
// client's next request answers the held calls with its outputs and the
// same turn goes on.
package codex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// Approval modes.
const (
	// ApprovalsDeny declines every command, file change and permission
	// request (the default).
	ApprovalsDeny = "deny"
	// ApprovalsApprove accepts command and file-change requests, which
	// then run inside the configured sandbox; everything else is denied.
	ApprovalsApprove = "approve"
)

// Instruction policies of Config.Instructions.
const (
	// InstructionsAuto sends the caller's instructions as the base prompt
	// in model mode, and falls back to Codex's own base prompt (once per
	// login, remembered) when the backend refuses them.
	InstructionsAuto = "auto"
	// InstructionsCaller always sends the caller's instructions.
	InstructionsCaller = "caller"
	// InstructionsCodex always keeps Codex's own base prompt (the
	// caller's instructions then follow as a developer message).
	InstructionsCodex = "codex"
)

// Defaults of Config.
const (
	// DefaultLiveThreads bounds the loaded threads kept for conversations
	// to continue on.
	DefaultLiveThreads = 256
	// DefaultLiveThreadTTL is how long an idle conversation thread stays
	// loaded.
	DefaultLiveThreadTTL = 10 * time.Minute
	// DefaultInstructions is the base prompt of a model-mode thread whose
	// caller sent no instructions (never empty).
	DefaultInstructions = "You are a helpful assistant."
)

// Config configures the provider.
type Config struct {
	// Command is the codex executable ("codex" when empty).
	Command string
	// Workdir is the working directory of agent-mode threads.
	Workdir string
	// Model is the Codex model; "" or "auto" lets Codex choose.
	Model string
	// Sandbox is the agent-mode sandbox ("read-only" when empty).
	Sandbox string
	// Approvals is ApprovalsDeny (default) or ApprovalsApprove.
	Approvals string
	// Processes is the pool size (1 when 0).
	Processes int
	// MaxRSS retires an App Server whose resident memory passes it
	// (appserver.DefaultMaxRSS when 0, never when negative).
	MaxRSS int64
	// Env is extra environment for codex (e.g. CODEX_HOME=...); codex
	// inherits nothing else of the worker's but appserver.DefaultInheritEnv.
	Env []string
	// Instructions is InstructionsAuto (default), InstructionsCaller or
	// InstructionsCodex.
	Instructions string
	// LiveThreads and LiveThreadTTL bound the conversation threads kept
	// loaded (DefaultLiveThreads, DefaultLiveThreadTTL when 0).
	LiveThreads   int
	LiveThreadTTL time.Duration
	// DenyRead lists absolute paths (files or directories) that the
	// commands Codex runs in agent mode can neither read nor write, such
	// as the Bus auth directory and the worker's token file. Agent threads
	// then run under a permission profile that extends the sandbox mode's
	// built-in one with these paths denied. Symbolic links in the paths
	// are resolved once, in New. A file replaced by rename while a command
	// runs is readable to that command (the kernel detaches the mount over
	// it): deny the directory of a file rotated that way. Nothing is
	// enforced under SandboxDangerFullAccess, which has no sandbox (New
	// logs a warning).
	DenyRead []string
	// ExhaustedBackoff is how long an exhausted login rests when Codex
	// names no reset time (DefaultExhaustedBackoff when 0).
	ExhaustedBackoff time.Duration
	// Logger receives logs.
	Logger *slog.Logger
	// Metrics, when set, gets the provider's metrics registered
	// (metrics.NewCodex: the pool, the login's rate-limit state, the turn
	// latency; metrics.go).
	Metrics prometheus.Registerer
}

// Provider runs turns on Codex.
type Provider struct {
	cfg     Config
	pool    *appserver.Pool
	handler appserver.Handler
	log     *slog.Logger

	stateDir     string // the provider's own files: empty cwd, model catalogs
	emptyDir     string
	defaultModel string // the model Codex runs when none is named
	catalogs     sync.Map
	refused      atomic.Bool // the backend refused custom instructions
	refusedOnce  sync.Once

	convs  *conversations
	limits *limits
	stop   context.CancelFunc
	wg     sync.WaitGroup

	// busy and metrics (nil without Config.Metrics): metrics.go.
	busy    busy
	metrics *metrics.Codex
}

// Errors of New, to check with errors.Is.
var (
	ErrNotInstalled = appserver.ErrNotInstalled
	ErrNotLoggedIn  = errors.New("codex is not logged in")
)

// New starts the pool (one process eagerly, so a missing binary or login is
// reported at once) and checks that Codex can reach its model.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Processes < 1 {
		cfg.Processes = 1
	}
	if cfg.LiveThreads <= 0 {
		cfg.LiveThreads = DefaultLiveThreads
	}
	if cfg.LiveThreadTTL <= 0 {
		cfg.LiveThreadTTL = DefaultLiveThreadTTL
	}
	switch cfg.Sandbox {
	case "":
		cfg.Sandbox = appserver.SandboxReadOnly
	case appserver.SandboxReadOnly, appserver.SandboxWorkspaceWrite, appserver.SandboxDangerFullAccess:
	default:
		return nil, fmt.Errorf("unknown sandbox %q (read-only, workspace-write or danger-full-access)", cfg.Sandbox)
	}
	deny, err := denyPaths(cfg.DenyRead)
	if err != nil {
		return nil, err
	}
	cfg.DenyRead = deny
	if len(deny) > 0 && cfg.Sandbox == appserver.SandboxDangerFullAccess {
		cfg.Logger.Warn("codex provider: deny-read paths are not enforced: danger-full-access runs commands without a sandbox", "paths", len(deny))
	}
	switch cfg.Instructions {
	case "":
		cfg.Instructions = InstructionsAuto
	case InstructionsAuto, InstructionsCaller, InstructionsCodex:
	default:
		return nil, fmt.Errorf("unknown instructions policy %q (auto, caller or codex)", cfg.Instructions)
	}
	if cfg.ExhaustedBackoff <= 0 {
		cfg.ExhaustedBackoff = DefaultExhaustedBackoff
	}
	p := &Provider{cfg: cfg, log: cfg.Logger, handler: appserver.HandlerFunc(appserver.Deny),
		limits: &limits{backoff: cfg.ExhaustedBackoff, now: time.Now}}
	switch cfg.Approvals {
	case "", ApprovalsDeny:
	case ApprovalsApprove:
		p.handler = appserver.HandlerFunc(approve)
	default:
		return nil, fmt.Errorf("unknown approvals mode %q (deny or approve)", cfg.Approvals)
	}
	dir, err := os.MkdirTemp("", "bus-codex-")
	if err != nil {
		return nil, fmt.Errorf("codex provider: state directory: %w", err)
	}
	p.stateDir, p.emptyDir = dir, filepath.Join(dir, "empty")
	if err := os.Mkdir(p.emptyDir, 0o700); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("codex provider: state directory: %w", err)
	}
	// The pool's processes live as long as the provider, not as long as
	// the caller's start-up context.
	pool, err := appserver.NewPool(context.WithoutCancel(ctx), appserver.PoolConfig{
		Process: appserver.Config{Command: cfg.Command, Dir: cfg.Workdir, Env: cfg.Env, Logger: cfg.Logger, ClientName: "bus-integration-codex",
			OnRateLimits: p.limits.update},
		Size:   cfg.Processes,
		Eager:  true,
		MaxRSS: cfg.MaxRSS,
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start codex app-server: %w", err)
	}
	p.pool = pool
	fail := func(err error) (*Provider, error) {
		_ = pool.Close()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	acct, err := pool.Account(ctx)
	if err != nil {
		return fail(fmt.Errorf("codex app-server: read account: %w", err))
	}
	if !acct.Ready() {
		return fail(ErrNotLoggedIn)
	}
	if p.defaultModel, err = p.probeDefaultModel(ctx); err != nil {
		return fail(fmt.Errorf("codex app-server: default model: %w", err))
	}
	p.warnAgentsFile()
	p.readLimits(ctx)
	p.convs = newConversations(cfg.LiveThreads, cfg.LiveThreadTTL)
	sweepCtx, stop := context.WithCancel(context.Background())
	p.stop = stop
	p.wg.Go(func() { p.convs.sweepEvery(sweepCtx, cfg.LiveThreadTTL/4) })
	p.registerMetrics()
	return p, nil
}

// probeDefaultModel starts and closes one lean thread without a model to
// learn which model Codex runs by default (config.toml's, else its
// catalog's), for the per-thread model catalog of model mode.
func (p *Provider) probeDefaultModel(ctx context.Context) (string, error) {
	if m := p.cfg.Model; m != "" && m != "auto" {
		return m, nil
	}
	th, err := p.pool.StartThread(ctx, appserver.ThreadParams{
		Cwd: p.emptyDir, BaseInstructions: DefaultInstructions, Config: leanConfig(nil, ""), ServiceName: serviceName,
	})
	if err != nil {
		return "", err
	}
	th.Close()
	if th.Model == "" {
		return "", errors.New("thread/start named no model")
	}
	return th.Model, nil
}

// warnAgentsFile warns once when Codex's home holds an AGENTS.md: Codex
// sends it with every request, model mode included, and no setting turns
// it off.
func (p *Provider) warnAgentsFile() {
	for _, proc := range p.pool.Processes() {
		home := proc.Info().CodexHome
		if home == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(home, "AGENTS.md")); err == nil {
			p.log.Warn("Codex sends this AGENTS.md to the model with every request, model mode included; give the worker a Codex home without one to keep requests to what the caller sent", "file", filepath.Join(home, "AGENTS.md"))
		}
		return
	}
}

func approve(ctx context.Context, req *appserver.ServerRequest) (any, error) {
	switch req.Method {
	case appserver.MethodCommandApproval, appserver.MethodFileChangeApproval:
		return map[string]any{"decision": "accept"}, nil
	}
	return appserver.Deny(ctx, req)
}

// Capabilities implements turn.Provider.
func (p *Provider) Capabilities() turn.Capabilities {
	return turn.Capabilities{Tools: true, Images: true, Schema: true, WebSearch: true}
}

// Close stops every App Server process and removes the provider's files.
func (p *Provider) Close() error {
	p.stop()
	p.wg.Wait()
	p.convs.closeAll()
	err := p.pool.Close()
	_ = os.RemoveAll(p.stateDir)
	return err
}

// Pool exposes the process pool (for diagnostics and benchmarks).
func (p *Provider) Pool() *appserver.Pool { return p.pool }

// LiveThreads is the number of conversation threads kept loaded.
func (p *Provider) LiveThreads() int { return p.convs.len() }

var _ turn.Provider = (*Provider)(nil)
