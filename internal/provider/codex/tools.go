package codex

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// Codex offers the model its own tools beside the client's. A client tool
// with the same name would be routed to Codex's tool (and its approval
// path) instead of back to the client, so such names are offered under
// another name and mapped back: the rule, documented in the README, is that
// a client tool whose name is one of Codex's own tools, or starts with a
// reserved prefix, is offered as "client_<name>" (with "_2", "_3", ... added
// if that is taken too). The client never sees the renamed form.

// codexToolNames are the tools Codex 0.169.0 may offer the model itself.
func codexToolNames() []string {
	return []string{
		"exec_command", "write_stdin", "request_user_input", "view_image", "multi_agent_v1",
		"get_goal", "create_goal", "update_goal", "shell", "shell_command", "local_shell",
		"unified_exec", "apply_patch", "update_plan", "web_search", "image_generation", "js_repl",
		"read_file", "list_dir", "grep_files", "spawn_agent", "send_input", "wait", "close_agent",
		"list_mcp_resources", "list_mcp_resource_templates", "read_mcp_resource",
	}
}

// reservedPrefixes are namespaces of Codex (MCP tools) and of this rule.
func reservedPrefixes() []string { return []string{"mcp__", "codex_", "client_"} }

func reserved(name string) bool {
	for _, n := range codexToolNames() {
		if name == n {
			return true
		}
	}
	for _, p := range reservedPrefixes() {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// toolNames maps client tool names to the names offered to Codex and back.
type toolNames struct {
	toCodex  map[string]string
	toClient map[string]string
}

func newToolNames(tools []turn.Tool, history []turn.Item) toolNames {
	m := toolNames{toCodex: map[string]string{}, toClient: map[string]string{}}
	taken := map[string]bool{}
	var names []string
	for _, t := range tools {
		names = append(names, t.Name)
	}
	for _, it := range history {
		if it.Type == turn.ItemFunctionCall {
			names = append(names, it.Name)
		}
	}
	for _, n := range names {
		if !reserved(n) {
			taken[n] = true
		}
	}
	for _, n := range names {
		if _, done := m.toCodex[n]; done {
			continue
		}
		offered := n
		if reserved(n) {
			offered = "client_" + n
			for i := 2; taken[offered]; i++ {
				offered = fmt.Sprintf("client_%s_%d", n, i)
			}
		}
		taken[offered] = true
		m.toCodex[n], m.toClient[offered] = offered, n
	}
	return m
}

func (m toolNames) codex(name string) string {
	if v, ok := m.toCodex[name]; ok {
		return v
	}
	return name
}

func (m toolNames) client(name string) string {
	if v, ok := m.toClient[name]; ok {
		return v
	}
	return name
}

// dynamicTools offers the client's tools to the model.
func dynamicTools(tools []turn.Tool, names toolNames) []appserver.DynamicTool {
	out := make([]appserver.DynamicTool, 0, len(tools))
	for _, t := range tools {
		schema := t.Parameters
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		out = append(out, appserver.DynamicTool{Name: names.codex(t.Name), Description: t.Description, InputSchema: schema})
	}
	return out
}

// toolInstructions carries the parts of tool_choice and
// parallel_tool_calls that Codex has no parameter for.
func toolInstructions(req *turn.Request, names toolNames) string {
	var parts []string
	switch req.ToolChoice.Mode {
	case turn.ToolChoiceRequired:
		parts = append(parts, "You must call one of the available client functions in this step; do not answer with text alone.")
	case turn.ToolChoiceFunction:
		parts = append(parts, fmt.Sprintf("You must call the function %q in this step; do not answer with text alone.", names.codex(req.ToolChoice.Name)))
	}
	if !req.ParallelToolCalls {
		parts = append(parts, "Call at most one function per step.")
	}
	return strings.Join(parts, " ")
}

// dynamicCall is a dynamicToolCall item as the App Server reports it.
type dynamicCall struct {
	ID        string          `json:"id"`
	Tool      string          `json:"tool"`
	Arguments json.RawMessage `json:"arguments"`
}

// toolCallOf converts a dynamicToolCall item to the client's tool call:
// the call id is the model's, the name the client's, the arguments a JSON
// text.
func toolCallOf(raw json.RawMessage, names toolNames) (turn.ToolCall, bool) {
	var c dynamicCall
	if json.Unmarshal(raw, &c) != nil || c.ID == "" || c.Tool == "" {
		return turn.ToolCall{}, false
	}
	args := string(c.Arguments)
	var s string
	if json.Unmarshal(c.Arguments, &s) == nil {
		args = s // already a JSON text
	}
	if args == "" || args == "null" {
		args = "{}"
	}
	return turn.ToolCall{ID: c.ID, Name: names.client(c.Tool), Arguments: args}, true
}
