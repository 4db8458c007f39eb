package codex

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

const serviceName = "bus-integration-codex"

// ModelModeConfig is the App Server config of a model-mode thread (every
// Codex tool and text block off) without web search or a model catalog:
// what the benchmarks' direct path starts its threads with, so that it
// measures the same thread the provider runs.
func ModelModeConfig() map[string]any { return leanConfig(nil, "") }

// leanConfig is the per-thread configuration of model mode: every block of
// text and every tool of Codex's own switched off (verified on 0.169.0 and
// 0.171.0, see ../shared/reference/codex-lean.md), web search only when
// the request asks for it, and, when catalog is set, a model catalog file
// that keeps client tools plain functions.
func leanConfig(ws *turn.WebSearch, catalog string) map[string]any {
	cfg := map[string]any{
		"features": map[string]any{
			"shell_tool": false, "view_image": false, "goals": false, "multi_agent": false,
			"apps": false, "plugins": false, "remote_plugin": false, "tool_suggest": false,
			"image_generation": false, "browser_use": false, "computer_use": false,
			"memories": false, "shell_snapshot": false,
		},
		"agents":                           map[string]any{"enabled": false},
		"web_search":                       "disabled",
		"tools":                            map[string]any{"experimental_request_user_input": map[string]any{"enabled": false}},
		"skills":                           map[string]any{"include_instructions": false},
		"include_environment_context":      false,
		"include_permissions_instructions": false,
		"include_apps_instructions":        false,
		"include_collaboration_mode_instructions": false,
		"project_doc_max_bytes":                   0,
		"thread_unload_delay_secs":                0,
	}
	applyWebSearch(cfg, ws)
	if catalog != "" {
		cfg["model_catalog_json"] = catalog
	}
	return cfg
}

// agentConfig is the per-thread configuration of agent mode: Codex as it
// is, but unloaded at once when done and without a login shell per thread.
func agentConfig(ws *turn.WebSearch) map[string]any {
	cfg := map[string]any{
		"features":                 map[string]any{"shell_snapshot": false},
		"thread_unload_delay_secs": 0,
	}
	applyWebSearch(cfg, ws)
	return cfg
}

// denyProfile is the permission profile of agent threads with deny-read
// paths.
const denyProfile = "bus-agent"

// agentSandbox sets the sandbox of an agent thread: the sandbox mode, or,
// when paths are denied and the mode has a sandbox, a permission profile
// that extends the mode's built-in profile (verified on 0.171.0 to give
// the same sandbox and instructions) with those paths denied. The App
// Server ignores a config default_permissions when thread/start names a
// sandbox, so the profile is named by thread/start permissions instead.
func agentSandbox(tp *appserver.ThreadParams, sandbox string, deny []string) {
	builtin := map[string]string{
		appserver.SandboxReadOnly:       ":read-only",
		appserver.SandboxWorkspaceWrite: ":workspace",
	}[sandbox]
	if len(deny) == 0 || builtin == "" {
		tp.Sandbox = sandbox
		return
	}
	entries := make(map[string]any, len(deny))
	for _, path := range deny {
		entries[path] = "deny"
	}
	tp.Permissions = denyProfile
	tp.Config["permissions"] = map[string]any{denyProfile: map[string]any{"extends": builtin, "filesystem": entries}}
}

// denyPaths checks and resolves Config.DenyRead: absolute paths without
// glob characters (Codex would read those as patterns), with the symbolic
// links of their longest existing prefix resolved (bubblewrap cannot
// mount over a symbolic link, and Codex then fails every thread).
func denyPaths(paths []string) ([]string, error) {
	out := make([]string, 0, len(paths))
	for _, path := range paths {
		if !filepath.IsAbs(path) || strings.ContainsAny(path, "*?[]") {
			return nil, fmt.Errorf("deny-read path %q must be absolute, without glob characters", path)
		}
		out = append(out, realPath(filepath.Clean(path)))
	}
	return out, nil
}

// realPath resolves the symbolic links of path's longest existing prefix.
func realPath(path string) string {
	rest := ""
	for dir := path; ; {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return path
		}
		rest = filepath.Join(filepath.Base(dir), rest)
		dir = parent
	}
}

func applyWebSearch(cfg map[string]any, ws *turn.WebSearch) {
	if ws == nil {
		return
	}
	cfg["web_search"] = "live"
	if ws.CachedOnly {
		cfg["web_search"] = "cached"
	}
	opts := map[string]any{}
	if ws.ContextSize != "" {
		opts["context_size"] = ws.ContextSize
	}
	if len(ws.AllowedDomains) > 0 {
		opts["allowed_domains"] = ws.AllowedDomains
	}
	var loc map[string]any
	if len(ws.Location) > 0 && json.Unmarshal(ws.Location, &loc) == nil {
		delete(loc, "type")
		if len(loc) > 0 {
			opts["location"] = loc
		}
	}
	if len(opts) > 0 {
		tools, _ := cfg["tools"].(map[string]any)
		if tools == nil {
			tools = map[string]any{}
			cfg["tools"] = tools
		}
		tools["web_search"] = opts
	}
}

// shape is everything fixed for a thread's life: a conversation continues
// on a live thread only when its request has the same shape.
type shape struct {
	mode   turn.Mode
	params appserver.ThreadParams
	names  toolNames
	// parallel is the client's parallel_tool_calls: false returns one
	// call per step.
	parallel bool
	// callerBase says the caller's instructions are the base prompt (the
	// backend may refuse them).
	callerBase bool
	key        [32]byte
}

// shapeOf maps the request onto thread parameters. codexBase forces
// Codex's own base prompt in model mode.
func (p *Provider) shapeOf(req *turn.Request, codexBase bool) (*shape, error) {
	mode := req.Mode
	if mode == "" {
		mode = turn.ModeModel
	}
	names, err := newToolNames(req.Tools, req.Input)
	if err != nil {
		return nil, err
	}
	model := p.cfg.Model
	if req.EngineModel != "" {
		model = req.EngineModel
	}
	if model == "auto" {
		model = ""
	}
	sh := &shape{mode: mode, names: names, parallel: req.ParallelToolCalls}
	tp := &sh.params
	tp.Model, tp.ServiceName, tp.RawEvents, tp.HoldToolCalls = model, serviceName, true, true
	tp.Handler = p.handler
	var developer []string
	if f := req.Format; f != nil && f.Type == "json_object" {
		developer = append(developer, jsonObjectInstruction)
	}
	if len(req.Tools) > 0 && req.ToolChoice.Mode != turn.ToolChoiceNone {
		tp.DynamicTools = dynamicTools(req.Tools, names)
		if extra := toolInstructions(req, names); extra != "" {
			developer = append(developer, extra)
		}
	}
	caller := strings.Join(req.Instructions, "\n\n")
	switch mode {
	case turn.ModeAgent:
		tp.Cwd, tp.ApprovalPolicy = p.cfg.Workdir, appserver.ApprovalUntrusted
		if p.cfg.Approvals == ApprovalsApprove {
			// Commands run inside the sandbox without asking, and Codex
			// refuses a request to escalate out of it: accepting approval
			// requests instead would also accept escalations, which run
			// unsandboxed.
			tp.ApprovalPolicy = appserver.ApprovalNever
		}
		tp.Config = agentConfig(req.WebSearch)
		agentSandbox(tp, p.cfg.Sandbox, p.cfg.DenyRead)
		developer = append([]string{caller}, developer...)
	case turn.ModeModel:
		tp.Cwd, tp.Sandbox, tp.ApprovalPolicy = p.emptyDir, appserver.SandboxReadOnly, appserver.ApprovalUntrusted
		useCodexBase := codexBase || p.cfg.Instructions == InstructionsCodex ||
			(p.cfg.Instructions == InstructionsAuto && p.refused.Load())
		if useCodexBase {
			// Codex's own base prompt, its catalog entry, its tools still off.
			tp.Config = leanConfig(req.WebSearch, "")
			developer = append([]string{caller}, developer...)
		} else {
			catalog, err := p.catalogFile(model, req.ParallelToolCalls)
			if err != nil {
				return nil, err
			}
			tp.Config = leanConfig(req.WebSearch, catalog)
			tp.BaseInstructions = caller
			if strings.TrimSpace(caller) == "" {
				tp.BaseInstructions = DefaultInstructions
			}
			sh.callerBase = true
		}
	default:
		return nil, fmt.Errorf("codex provider: unknown mode %q", mode)
	}
	tp.DeveloperInstructions = strings.TrimSpace(strings.Join(nonEmpty(developer), "\n\n"))
	type keyTool struct {
		appserver.DynamicTool
		Namespace, NamespaceDescription string
	}
	keyTools := make([]keyTool, len(tp.DynamicTools))
	for i, t := range tp.DynamicTools {
		keyTools[i] = keyTool{t, t.Namespace, t.NamespaceDescription}
	}
	key, err := json.Marshal(struct {
		Mode     turn.Mode
		Parallel bool
		Params   appserver.ThreadParams
		Tools    []keyTool
	}{mode, req.ParallelToolCalls, threadKeyParams(*tp), keyTools})
	if err != nil {
		return nil, fmt.Errorf("codex provider: shape: %w", err)
	}
	sh.key = sha256.Sum256(key)
	return sh, nil
}

// threadKeyParams drops what cannot be encoded (the handler) from tp.
func threadKeyParams(tp appserver.ThreadParams) appserver.ThreadParams {
	tp.Handler = nil
	return tp
}

func nonEmpty(ss []string) []string {
	out := ss[:0:0]
	for _, s := range ss {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

// jsonObjectInstruction honours response_format json_object, which has no
// schema to enforce.
const jsonObjectInstruction = "Respond with a single valid JSON object and nothing else: no prose, no Markdown code fences."

// catalogFile returns the path of a one-entry model catalog for model (the
// default model when empty) that keeps client tools plain functions: no
// code mode, no Responses-lite, no apply_patch. Codex's own catalog puts
// its newer models in code mode, where dynamic tools are only reachable
// as JavaScript inside Codex's exec tool. The file is written once.
func (p *Provider) catalogFile(model string, parallel bool) (string, error) {
	if model == "" {
		model = p.defaultModel
	}
	key := fmt.Sprintf("%s|%v", model, parallel)
	if v, ok := p.catalogs.Load(key); ok {
		return v.(string), nil
	}
	levels := []map[string]string{}
	for _, e := range []string{"low", "medium", "high", "xhigh"} {
		levels = append(levels, map[string]string{"effort": e, "description": e})
	}
	entry := map[string]any{
		"slug": model, "display_name": model, "priority": 1, "visibility": "list", "supported_in_api": true,
		"base_instructions": "", "support_verbosity": false, "shell_type": "shell_command",
		"truncation_policy":          map[string]any{"mode": "tokens", "limit": 10000},
		"supported_reasoning_levels": levels, "supports_reasoning_summaries": true,
		"experimental_supported_tools": []string{}, "input_modalities": []string{"text", "image"},
		"context_window": 272000, "supports_parallel_tool_calls": parallel,
		"tool_mode": nil, "use_responses_lite": false, "apply_patch_tool_type": nil, "web_search_tool_type": "text",
	}
	b, err := json.Marshal(map[string]any{"models": []any{entry}})
	if err != nil {
		return "", fmt.Errorf("codex provider: model catalog: %w", err)
	}
	sum := sha256.Sum256([]byte(key))
	path := filepath.Join(p.stateDir, fmt.Sprintf("catalog-%x.json", sum[:8]))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("codex provider: model catalog: %w", err)
	}
	p.catalogs.Store(key, path)
	return path, nil
}
